"""The Argo coordinator (not built yet): global workflow graph, placement over gRPC, data flow, monitoring."""
