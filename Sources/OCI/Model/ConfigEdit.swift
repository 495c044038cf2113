/// An edit of an image's config and manifest annotations, as `umoci config` makes it from its
/// flags (umoci's mutate of ImageConfig): fields cleared first, then set, in umoci's order. Nil
/// leaves a field as it is; an empty string removes User, StopSignal or WorkingDir.
public struct ConfigEdit: Sendable {
    /// The fields `--clear` may empty.
    public enum Clear: String, CaseIterable, Sendable {
        case labels = "config.labels"
        case annotations = "manifest.annotations"
        case exposedPorts = "config.exposedports"
        case env = "config.env"
        case volume = "config.volume"
        case cmd = "config.cmd"
        case entrypoint = "config.entrypoint"
    }

    public var clear: [Clear] = []
    /// RFC 3339, normalized (Timestamp.normalize).
    public var created: String?
    public var author: String?
    public var architecture: String?
    public var os: String?
    public var variant: String?
    public var user: String?
    public var stopSignal: String?
    public var workingDir: String?
    /// Added to the ExposedPorts and Volumes sets.
    public var exposedPorts: [String] = []
    public var volumes: [String] = []
    /// NAME=VALUE pairs: an existing NAME's entry is replaced in place, a new one appended.
    public var env: [(String, String)] = []
    public var entrypoint: [String] = []
    public var cmd: [String] = []
    public var labels: [(String, String)] = []
    public var annotations: [(String, String)] = []

    public init() {}

    /// Applies the edit to `image` (config and manifest annotations); the history entry is the
    /// caller's.
    public func apply(to image: inout Image) {
        var config = image.config
        var run = config.runConfig
        var manifestAnnotations = image.manifest.annotations
        let order = ImageConfig.runConfigFieldOrder
        func setRun(_ key: String, _ value: JSON?) { run.set(key, value, order: order) }

        for c in clear {
            switch c {
            case .labels: setRun("Labels", nil)
            case .annotations: manifestAnnotations = [:]
            case .exposedPorts: setRun("ExposedPorts", nil)
            case .env: setRun("Env", nil)
            case .volume: setRun("Volumes", nil)
            case .cmd: setRun("Cmd", nil)
            case .entrypoint: setRun("Entrypoint", nil)
            }
        }
        if let created { config.created = created }
        if let author { config.author = author }
        if let architecture { config.architecture = architecture }
        if let os { config.os = os }
        if let variant { config.variant = variant }
        if let user { setRun("User", user.isEmpty ? nil : .string(user)) }
        if let stopSignal { setRun("StopSignal", stopSignal.isEmpty ? nil : .string(stopSignal)) }
        if let workingDir { setRun("WorkingDir", workingDir.isEmpty ? nil : .string(workingDir)) }
        if !exposedPorts.isEmpty { setRun("ExposedPorts", .object(Self.addingKeys(exposedPorts, to: run["ExposedPorts"]))) }
        if !env.isEmpty {
            var list = run["Env"]?.strings ?? []
            for (name, value) in env {
                let entry = "\(name)=\(value)"
                if let i = list.firstIndex(where: { $0.split(separator: "=", maxSplits: 1).first.map(String.init) == name }) {
                    list[i] = entry
                } else {
                    list.append(entry)
                }
            }
            setRun("Env", .strings(list))
        }
        if !entrypoint.isEmpty { setRun("Entrypoint", .strings(entrypoint)) }
        if !cmd.isEmpty { setRun("Cmd", .strings(cmd)) }
        if !volumes.isEmpty { setRun("Volumes", .object(Self.addingKeys(volumes, to: run["Volumes"]))) }
        if !labels.isEmpty {
            var map = run["Labels"]?.object?.stringMap ?? [:]
            for (k, v) in labels { map[k] = v }
            setRun("Labels", .object(JSONObject(stringMap: map)))
        }
        for (k, v) in annotations { manifestAnnotations[k] = v }

        config.runConfig = run
        image.config = config
        image.manifest.annotations = manifestAnnotations
    }

    /// A set stored as a JSON object of empty objects (ExposedPorts, Volumes), with keys added
    /// and written sorted, as Go marshals a map.
    static func addingKeys(_ keys: [String], to existing: JSON?) -> JSONObject {
        var set = existing?.object ?? JSONObject()
        for k in keys where set[k] == nil { set[k] = .object(JSONObject()) }
        return set.sortedByKey()
    }
}
