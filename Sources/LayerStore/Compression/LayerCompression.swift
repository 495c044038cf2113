/// How a layer blob is compressed, as named by its media type.
public enum LayerCompression: Sendable, Equatable {
    case none, gzip, zstd

    /// The compression of a layer with media type `mediaType`: the OCI layer types
    /// (`application/vnd.oci.image.layer.v1.tar`, `+gzip`, `+zstd`), their nondistributable
    /// variants, and Docker's `application/vnd.docker.image.rootfs.diff.tar.gzip` and
    /// `application/vnd.docker.image.rootfs.foreign.diff.tar.gzip`. Any other type is an error
    /// that names it.
    public init(mediaType: String) throws(StoreError) {
        switch mediaType {
        case MediaType.layerTar, MediaType.layerNondistributableTar:
            self = .none
        case MediaType.layerTarGzip, MediaType.layerNondistributableTarGzip,
             MediaType.dockerLayerGzip, MediaType.dockerLayerForeignGzip:
            self = .gzip
        case MediaType.layerTarZstd, MediaType.layerNondistributableTarZstd:
            self = .zstd
        default:
            throw StoreError("unsupported layer media type \(mediaType)")
        }
    }

    /// The OCI (distributable) layer media type for this compression.
    public var layerMediaType: String {
        switch self {
        case .none: MediaType.layerTar
        case .gzip: MediaType.layerTarGzip
        case .zstd: MediaType.layerTarZstd
        }
    }
}
