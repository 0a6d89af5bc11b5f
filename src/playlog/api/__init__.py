"""The gRPC edge: thin servicers translating between protobuf and the domain."""
