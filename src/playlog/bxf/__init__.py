"""BXF (SMPTE ST 2021) at playlog's edge (SPEC section 16): a traffic system's
schedule in, the as-run back out. Pure functions over bytes and protobuf
messages; `playlog ctl bxf` carries them over the gRPC API."""
