"""Connections and names: what a caller may hand us as a connection (`connections`), PostgreSQL
identifiers checked at the edge (`identifiers`), and a throwaway local server (`throwaway`)."""
