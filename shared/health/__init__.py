"""Health: what each part of the fleet reports, how it is judged, stored, alerted on and served."""
