"""Corrective workflows: verdicts in; line commands, MES tickets and action events out."""
