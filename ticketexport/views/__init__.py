"""The one view → SQL compiler that the list page and the CSV export share."""
