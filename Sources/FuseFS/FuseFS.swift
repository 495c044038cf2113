// FuseFS: the libfuse3 low-level server behind `umoci unpack`: an image's merged view as the
// read-only lower layer under a writable upper directory. See OverlayServer.
