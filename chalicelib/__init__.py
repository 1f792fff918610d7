"""Satchel: serverless downloads and exports. Logic lives here; app.py only wires it."""
