/// Media types of the OCI image-spec (image-spec/media-types.md) and their Docker equivalents.
public enum MediaType {
    /// The image-spec version whose documents this tool reads (1.1: artifactType, subject,
    /// embedded data) and writes.
    public static let imageSpecVersion = "1.1.1"

    public static let imageManifest = "application/vnd.oci.image.manifest.v1+json"
    public static let imageIndex = "application/vnd.oci.image.index.v1+json"
    public static let imageConfig = "application/vnd.oci.image.config.v1+json"
    public static let layerTar = "application/vnd.oci.image.layer.v1.tar"
    public static let layerTarGzip = "application/vnd.oci.image.layer.v1.tar+gzip"
    public static let layerTarZstd = "application/vnd.oci.image.layer.v1.tar+zstd"
    public static let layerNondistributableTar = "application/vnd.oci.image.layer.nondistributable.v1.tar"
    public static let layerNondistributableTarGzip = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
    public static let layerNondistributableTarZstd = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

    public static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
    public static let dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
    public static let dockerConfig = "application/vnd.docker.container.image.v1+json"
    public static let dockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    public static let dockerLayerForeignGzip = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

    /// image-spec 1.1's empty descriptor content (`{}`), e.g. the config of an artifact.
    public static let empty = "application/vnd.oci.empty.v1+json"

    public static func isImageConfig(_ t: String) -> Bool { t == imageConfig || t == dockerConfig }
    public static func isManifest(_ t: String) -> Bool { t == imageManifest || t == dockerManifest }
    public static func isIndex(_ t: String) -> Bool { t == imageIndex || t == dockerManifestList }
}

/// Annotation keys of the image-spec (image-spec/annotations.md) that this tool reads or writes.
public enum Annotation {
    public static let refName = "org.opencontainers.image.ref.name"
}
