"""Fallkonferenzen (case conferences): agreements for the single case and structural findings for
the steering group. ``scrubber`` checks a finding's text for personal data before it may leave
the conference."""
