"""The gateway's WhatsApp key store: a retention policy per key type, batched cleanup, session health."""
