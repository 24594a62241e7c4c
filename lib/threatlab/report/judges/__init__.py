"""One module of judges per attack family; `report.findings` collects them in order."""
