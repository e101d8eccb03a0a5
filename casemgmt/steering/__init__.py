"""What the steering group (Lenkungsgruppe) sees: anonymised aggregates only."""
