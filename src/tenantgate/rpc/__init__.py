"""The gRPC edge: servicers, proto<->model conversion, error->status table use, server assembly."""
