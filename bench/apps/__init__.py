"""The peers fleet is measured against, each written the way its own documentation shows."""
