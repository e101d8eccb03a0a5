"""Notifications: an outbox written in the same transaction as the change it reports, delivered
at least once by a separate notifier (email, webhook) with retries."""
