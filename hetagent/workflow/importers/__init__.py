"""Importers: workflows from where agents live (Dify exports, LangGraph programs, recorded traces)."""
