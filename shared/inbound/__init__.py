"""Inbound chat messages: the payload producers send, storing, answering in order, delivering replies."""
