"""Alerts: clinical rules over reading columns, alert lifecycle and the clinician feed."""
