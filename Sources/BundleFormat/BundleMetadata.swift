import Basics
import OCI
/// `umoci.json` of a runtime bundle: umoci's schema (`umoci_version` "2",
/// `from_descriptor_path`, `map_options`), plus `unpack_mode` ("mount" or "extract") and, for a
/// mounted bundle, a `mount` member with what this tool needs to mount the bundle again. A
/// bundle without `unpack_mode` is a mounted one if it has `mount`, else umoci's own (extract). Kept as a JSON view like the OCI types, so fields written by other
/// versions survive an update.
public struct BundleMetadata: Sendable {
    public var json: JSONObject

    public static let fileName = "umoci.json"
    public static let umociVersion = "2"

    public init(json value: JSON, path: String) throws(StoreError) {
        guard let object = value.object else { throw StoreError(.corrupt, "\(path) is not a JSON object") }
        guard object["umoci_version"]?.string == BundleMetadata.umociVersion else {
            throw StoreError(.unsupported, "\(path): unsupported umoci_version \(object["umoci_version"]?.text ?? "(none)")")
        }
        if let mode = object["unpack_mode"], mode.string.flatMap(Mode.init(rawValue:)) == nil {
            throw StoreError(.corrupt, "\(path): unknown unpack_mode \(mode.text): must be \"mount\" or \"extract\"")
        }
        json = object
        _ = try fromDescriptorPath(path: path)
        _ = try MapOptions(json: object["map_options"], path: path)
    }

    /// `map_options`: the mappings and rootless flag of the unpack, which repack uses again.
    public var mapOptions: MapOptions {
        (try? MapOptions(json: json["map_options"], path: BundleMetadata.fileName)) ?? MapOptions()
    }

    /// A mounted bundle's metadata with `mount`, an extracted one's without.
    public init(from path: DescriptorPath, mount: Mount?, mapOptions: MapOptions = MapOptions()) {
        json = JSONObject()
        json["umoci_version"] = .string(BundleMetadata.umociVersion)
        setFromDescriptorPath(path)
        json["map_options"] = mapOptions.json
        self.mount = mount
        json["unpack_mode"] = .string((mount == nil ? Mode.extract : Mode.mount).rawValue)
    }

    /// How the bundle's rootfs was made: served by a FUSE mount over an upper directory, or
    /// extracted as a plain directory with an mtree manifest (umoci's own format).
    public enum Mode: String, Sendable {
        case mount, extract
    }

    public var mode: Mode {
        json["unpack_mode"]?.string.flatMap(Mode.init(rawValue:)) ?? (json["mount"]?.object != nil ? .mount : .extract)
    }

    public static func read(bundle: String) throws(StoreError) -> BundleMetadata {
        let file = bundle + "/" + fileName
        guard Files.exists(file) else { throw StoreError(.notFound, "\(bundle) is not a bundle made by umoci unpack: \(fileName) is missing") }
        let bytes = try Files.read(file)
        let json: JSON
        do { json = try JSON.parse(bytes) } catch { throw StoreError(.corrupt, "\(file): \(error)") }
        return try BundleMetadata(json: json, path: file)
    }

    public func write(bundle: String) throws(StoreError) {
        try Files.writeAtomically(bundle + "/" + BundleMetadata.fileName, json.serializedValue)
    }

    public func fromDescriptorPath(path: String = fileName) throws(StoreError) -> DescriptorPath {
        guard let walk = json["from_descriptor_path"]?.object?["descriptor_walk"]?.array, !walk.isEmpty else {
            throw StoreError(.corrupt, "\(path): from_descriptor_path.descriptor_walk is missing or empty")
        }
        var descriptors: [Descriptor] = []
        for (i, d) in walk.enumerated() {
            descriptors.append(try Descriptor(json: d, what: "descriptor_walk[\(i)] of \(path)"))
        }
        return DescriptorPath(walk: descriptors)
    }

    public mutating func setFromDescriptorPath(_ path: DescriptorPath) {
        json["from_descriptor_path"] = .object(JSONObject(["descriptor_walk": .array(path.walk.map { .object($0.json) })]))
    }

    /// What mounting the bundle needs: where the layout and the index cache are, and the
    /// options the merged view was built with.
    public struct Mount: Sendable, Equatable {
        public var layout: String
        public var cacheDirectory: String
        public var keepDirlinks: Bool

        public init(layout: String, cacheDirectory: String, keepDirlinks: Bool) {
            self.layout = layout
            self.cacheDirectory = cacheDirectory
            self.keepDirlinks = keepDirlinks
        }
    }

    public var mount: Mount? {
        get {
            guard let m = json["mount"]?.object, let layout = m["layout"]?.string, let cache = m["cache_dir"]?.string else { return nil }
            return Mount(layout: layout, cacheDirectory: cache, keepDirlinks: m["keep_dirlinks"]?.bool ?? false)
        }
        set {
            json["mount"] = newValue.map {
                .object(JSONObject(["layout": .string($0.layout), "cache_dir": .string($0.cacheDirectory),
                                    "keep_dirlinks": .bool($0.keepDirlinks)]))
            }
        }
    }
}

/// The files of a bundle made by `umoci unpack`.
public struct BundlePaths: Sendable {
    public let bundle: String
    public init(_ bundle: String) { self.bundle = bundle }

    public var config: String { bundle + "/config.json" }
    public var rootfs: String { bundle + "/rootfs" }
    public var metadata: String { bundle + "/" + BundleMetadata.fileName }
    /// The writable upper directory: exactly the changes made through the mount, as an OCI layer diff.
    public var upper: String { bundle + "/upper" }
    /// The mount server's log.
    public var log: String { bundle + "/umoci-mount.log" }
    /// The mount server's process id while it runs.
    public var pid: String { bundle + "/umoci-mount.pid" }
    /// What of the upper directory is already in the bundle's base image (UpperBaseline).
    public var baseline: String { bundle + "/umoci-upper-baseline" }
    /// The mount server's control socket (MountControl), while it runs.
    public var control: String { bundle + "/umoci-mount.sock" }
    /// Where a live rebase moves what leaves the upper directory, until it is deleted.
    public var trash: String { bundle + "/umoci-upper-trash" }
}
