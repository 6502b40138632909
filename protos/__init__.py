"""The wire vocabulary (protobuf) shared by sites and Argo (not built yet)."""
