"""The lake stage: inspection records in Apache Iceberg tables, and the KPIs read from them."""
