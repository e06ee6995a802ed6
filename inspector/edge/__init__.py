"""``inspector edge``: ingest, worker(s) and act of one box as one supervised group."""
