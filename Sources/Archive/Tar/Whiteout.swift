import Basics

/// The whiteout names of an OCI layer (image-spec layer.md), the one definition the view, the
/// layer writer, the upper directory and the FUSE server use: an entry `.wh.NAME` deletes NAME
/// from the layers below; `.wh..wh..opq` in a directory hides everything the layers below have
/// in it. Names starting with `.wh..wh.` are reserved (AUFS's metadata): other than the opaque
/// marker, the upper directory uses them for this tool's own files (UpperWhiteout).
public enum Whiteout {
    public static let prefix: ByteString = ".wh."
    public static let opaqueMarker: ByteString = ".wh..wh..opq"
    public static let reservedPrefix: ByteString = ".wh..wh."

    /// Whether `name` (one component) has the whiteout prefix.
    @inline(__always)
    public static func isWhiteout(_ name: ByteString) -> Bool { name.hasPrefix(prefix) }

    /// The whiteout entry's name for `name` (one component).
    public static func name(for name: ByteString) -> ByteString { prefix + name }
}
