"""YClients: the API client, its rate limiter, the row models, and the sync that keeps PostgreSQL current."""
