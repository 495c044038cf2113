import Basics
import OCI
import BundleFormat

/// An image ready to be loaded from a layout: which layout, which image in it, and where it came from.
public struct PreparedImage: Sendable {
    /// A tag of a local layout.
    public static func layout(_ path: String, tag: String) -> PreparedImage {
        PreparedImage(layout: path, selection: .tag(tag), source: nil)
    }

    public enum Selection: Sendable {
        case tag(String)
        case descriptors(DescriptorPath)
    }

    public let layout: String
    public let selection: Selection
    /// `docker://HOST/REPO@DIGEST` for a registry image (the manifest it resolved to); nil for a layout.
    public let source: String?
    public var requested: String?

    public init(layout: String, selection: Selection, source: String?, requested: String? = nil) {
        self.layout = layout
        self.selection = selection
        self.source = source
        self.requested = requested
    }

    public func descriptorPath(in layout: ImageLayout) throws -> DescriptorPath {
        switch selection {
        case .tag(let tag): return try layout.resolveImage(tag: tag)
        case .descriptors(let path): return path
        }
    }

    public func load(_ layout: ImageLayout) throws -> Image {
        try layout.loadImage(descriptorPath(in: layout))
    }

    /// umoci.json keeps where a registry image came from: the reference as given, the
    /// manifest it resolved to, and the layout its blobs were fetched into (repack reads the
    /// base from there).
    public func record(in metadata: inout BundleMetadata) {
        guard let source else { return }
        var object = JSONObject()
        object["reference"] = requested.map { .string($0) }
        object["resolved"] = .string(source)
        object["layout"] = .string(Mounting.canonical(layout))
        metadata.json["image_source"] = .object(object)
    }

    /// The same for a bundle whose umoci.json is already written (extract mode).
    public func record(bundle: String) throws {
        guard source != nil else { return }
        var metadata = try BundleMetadata.read(bundle: bundle)
        record(in: &metadata)
        try metadata.write(bundle: bundle)
    }
}
