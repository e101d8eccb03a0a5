"""The Erstgespräch: the structured first interview with a Gesprächsleitfaden (DOMAIN.md 10)."""
