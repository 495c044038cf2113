import Basics
#if canImport(Glibc)
import Glibc
#endif

/// An image platform (image-spec's `platform` of an index entry), and the choice of one
/// manifest from an index as skopeo and podman make it (containers/image
/// internal/pkg/platform): linux and the host's architecture, variants matched exactly from a
/// list of the variants the host runs, best first; the first wanted platform that any index
/// entry matches wins, and among entries, the first in the index.
public struct Platform: Sendable, Equatable, CustomStringConvertible {
    public var os: String
    public var architecture: String
    /// "" when the platform names none.
    public var variant: String

    public init(os: String, architecture: String, variant: String = "") {
        self.os = os
        self.architecture = architecture
        self.variant = variant
    }

    public var description: String { variant.isEmpty ? "\(os)/\(architecture)" : "\(os)/\(architecture)/\(variant)" }

    /// This machine, with GOARCH's names for its architecture (`uname -m` x86_64 is amd64).
    public static var host: Platform {
        var u = utsname()
        uname(&u)
        let machine = withUnsafeBytes(of: u.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        switch machine {
        case "x86_64": return Platform(os: "linux", architecture: "amd64")
        case "aarch64", "arm64": return Platform(os: "linux", architecture: "arm64", variant: "v8")
        case "armv7l", "armv7": return Platform(os: "linux", architecture: "arm", variant: "v7")
        case "armv6l": return Platform(os: "linux", architecture: "arm", variant: "v6")
        case "armv5l", "armv5tel": return Platform(os: "linux", architecture: "arm", variant: "v5")
        case "i386", "i486", "i586", "i686": return Platform(os: "linux", architecture: "386")
        case "ppc64le": return Platform(os: "linux", architecture: "ppc64le")
        case "s390x": return Platform(os: "linux", architecture: "s390x")
        case "riscv64": return Platform(os: "linux", architecture: "riscv64")
        case "mips64": return Platform(os: "linux", architecture: "mips64")
        default: return Platform(os: "linux", architecture: machine)
        }
    }

    /// The platforms this one runs, best first: an arm v7 host runs v7, v6 and v5 images, then
    /// one that names no variant; a host without a variant wants an image without one, then
    /// the architecture's base variant (arm64's v8).
    public var wanted: [Platform] {
        var variants: [String]
        if !variant.isEmpty {
            let order = Platform.compatibility[architecture] ?? []
            if let i = order.firstIndex(of: variant) { variants = Array(order[i...]) } else { variants = [variant] }
            variants.append("")
        } else {
            variants = [""]
            if let base = Platform.baseVariants[architecture] { variants.append(base) }
        }
        return variants.map { Platform(os: os, architecture: architecture, variant: $0) }
    }

    /// Known variants per architecture, most capable first.
    static let compatibility: [String: [String]] = ["arm": ["v7", "v6", "v5"], "arm64": ["v8"]]
    /// The variant every machine of an architecture runs.
    static let baseVariants: [String: String] = ["arm64": "v8"]

    /// Exact: a wanted "" matches only an entry that names no variant.
    public func matches(_ candidate: Platform) -> Bool {
        candidate.os == os && candidate.architecture == architecture && candidate.variant == variant
    }

    /// The platform of an index entry, nil when it has none.
    public init?(descriptor: Descriptor) {
        guard let p = descriptor.json["platform"]?.object, let os = p["os"]?.string, let arch = p["architecture"]?.string else {
            return nil
        }
        self.init(os: os, architecture: arch, variant: p["variant"]?.string ?? "")
    }

    /// The entry of `manifests` this platform runs best, or nil.
    public func choose(from manifests: [Descriptor]) -> Descriptor? {
        for want in wanted {
            if let d = manifests.first(where: { Platform(descriptor: $0).map(want.matches) ?? false }) { return d }
        }
        return nil
    }
}
