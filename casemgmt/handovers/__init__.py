"""Handovers (Übergaben): a step, a benefit regime or a whole chain passes from one organisation
to another and must be acknowledged within a number of working days."""
