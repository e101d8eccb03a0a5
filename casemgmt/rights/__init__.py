"""The data subject's rights (GDPR Art. 12, 15-18, 20), erasure by key destruction, legal holds
and retention (Art. 5(1)(e))."""
