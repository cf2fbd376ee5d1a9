"""The statement layer: the SQL templates under `sql_templates/` and the one builder every
statement the package runs is rendered through (`templates`)."""
