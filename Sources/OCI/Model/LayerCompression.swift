import Basics
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
            throw StoreError(.unsupported, "unsupported layer media type \(mediaType)")
        }
    }

    /// umoci 0.6's `--compress=auto` (mutate.PickDefaultCompressAlgorithm): the compression
    /// of the most recent layer whose media type ends in a suffix umoci compresses with
    /// (`+gzip`, `+zstd`; the suffix is what follows the first '+'), never none; gzip when no
    /// layer has one. Docker's gzip layer types have no suffix and so do not count.
    public static func auto(for layers: [Descriptor]) -> LayerCompression {
        for layer in layers.reversed() {
            guard let plus = layer.mediaType.firstIndex(of: "+") else { continue }
            switch layer.mediaType[layer.mediaType.index(after: plus)...] {
            case "gzip": return .gzip
            case "zstd": return .zstd
            default: continue
            }
        }
        return .gzip
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
