"""The data layer: typed errors, validated models, repositories (where SQL lives), and the rows the fleet keeps
or lets go of on purpose (dead letters, retention)."""
