"""playlog's HTTP edge (see playlog.http.edge)."""
