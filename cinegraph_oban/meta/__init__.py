"""Import outcomes in job meta: the records (`records`), merging them atomically into a job
(`outcomes`), and the SQLAlchemy query builders and readers (`queries`, `readers`)."""
