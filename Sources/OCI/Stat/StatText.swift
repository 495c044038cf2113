import Basics
/// `umoci stat`'s human output, byte for byte as umoci 0.6 writes it (`ManifestStat.Format`
/// and the pprint helpers in umoci's utils.go): `== MANIFEST ==`, then `== CONFIG ==` when the
/// config blob is JSON, then `== HISTORY ==` when it is an image config. Bytes, not a String:
/// the hex dump of embedded descriptor data copies non-ASCII bytes through as they are.
public struct StatText {
    public private(set) var bytes: [UInt8] = []

    public init(_ stat: ImageStat) {
        line("== MANIFEST ==")
        manifest("", stat.manifest)
        descriptor("", stat.descriptor)
        if let config = stat.config {
            line("\n== CONFIG ==")
            if let image = config.image { self.image("", image) }
            descriptor("", config.descriptor)
        }
        if let history = stat.history {
            line("\n== HISTORY ==")
            self.history(history)
        }
    }

    private mutating func line(_ s: String) {
        bytes += s.utf8
        bytes.append(0x0A)
    }

    // MARK: umoci's pprint helpers

    /// `key:` alone, or `key: v1, v2`, each value quoted when needed (always when it holds a
    /// comma, so that the list stays readable).
    private mutating func pprint(_ prefix: String, _ key: String, _ values: [String] = []) {
        if values.isEmpty {
            line("\(prefix)\(key):")
        } else {
            let quoted = values.map { $0.contains(",") ? GoText.quote($0) : GoText.quoteIfNeeded($0, precise: true) }
            line("\(prefix)\(key): \(quoted.joined(separator: ", "))")
        }
    }

    private mutating func pprint(_ prefix: String, _ key: String, _ value: String) {
        pprint(prefix, key, [value])
    }

    private mutating func slice(_ prefix: String, _ name: String, _ data: [String]) {
        guard !data.isEmpty else { return pprint(prefix, name, "(empty)") }
        pprint(prefix, name)
        for item in data { line(prefix + "\t" + GoText.quoteIfNeeded(item, precise: true)) }
    }

    private mutating func map(_ prefix: String, _ name: String, _ data: [String: String]) {
        guard !data.isEmpty else { return pprint(prefix, name, "(empty)") }
        pprint(prefix, name)
        for key in StatText.sorted(data.keys) {
            pprint(prefix + "\t", GoText.quoteIfNeeded(key, precise: true), data[key]!)
        }
    }

    private mutating func set(_ prefix: String, _ name: String, _ keys: [String]) {
        guard !keys.isEmpty else { return pprint(prefix, name, "(empty)") }
        pprint(prefix, name, StatText.sorted(keys))
    }

    /// Go's `slices.Sorted` of strings: by bytes.
    static func sorted(_ keys: some Sequence<String>) -> [String] {
        keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
    }

    private mutating func data(_ prefix: String, _ name: String, _ data: [UInt8]) {
        guard !data.isEmpty else { return pprint(prefix, name, "(empty)") }
        line("\(prefix)\(name): (\(data.count) bytes)")
        let maxDisplaySize = 256
        xxd(prefix + "\t", data.prefix(maxDisplaySize))
        if data.count > maxDisplaySize {
            line("\(prefix)\t....  (extra \(data.count - maxDisplaySize) bytes omitted)")
        }
    }

    /// umoci's xxd: `OFFS: hhhh hhhh ...  text`, 16 bytes a line.
    private mutating func xxd(_ prefix: String, _ data: ArraySlice<UInt8>) {
        let bytesPerLine = 16
        var offset = 0
        while offset < data.count {
            let chunk = data.dropFirst(offset).prefix(bytesPerLine)
            var text = prefix + GoText.hex(UInt32(offset), 4) + ": "
            var printable: [UInt8] = []
            for idx in 0..<bytesPerLine {
                if idx != 0 && idx % 2 == 0 { text += " " }
                if idx >= chunk.count {
                    text += "  "
                } else {
                    let b = chunk[chunk.startIndex + idx]
                    text += GoText.hex(UInt32(b), 2)
                    printable.append(GoText.isGraphicByte(b) ? b : UInt8(ascii: "."))
                }
            }
            bytes += text.utf8
            bytes += "  ".utf8
            bytes += printable
            bytes.append(0x0A)
            offset += chunk.count
        }
    }

    private mutating func platform(_ prefix: String, _ p: JSONObject) {
        pprint(prefix, "Platform")
        let prefix = prefix + "\t"
        pprint(prefix, "OS", p["os"]?.string ?? "")
        if let version = p["os.version"]?.string, !version.isEmpty { pprint(prefix, "OS Version", version) }
        if let features = p["os.features"]?.strings, !features.isEmpty { pprint(prefix, "OS Features", features) }
        var arch = GoText.quoteIfNeeded(p["architecture"]?.string ?? "", precise: true)
        if let variant = p["variant"]?.string, !variant.isEmpty {
            arch += " (\(GoText.quoteIfNeeded(variant, precise: false)))"
        }
        line("\(prefix)Architecture: \(arch)")
    }

    private mutating func descriptor(_ prefix: String, _ d: Descriptor) {
        pprint(prefix, "Descriptor")
        let inner = prefix + "\t"
        pprint(inner, "Media Type", d.mediaType)
        if let artifactType = d.json["artifactType"]?.string, !artifactType.isEmpty {
            pprint(inner, "Artifact Type", artifactType)
        }
        pprint(inner, "Digest", d.digest.description)
        pprint(inner, "Size", GoText.humanSize(d.size))
        // umoci 0.6 prints a descriptor's platform without the descriptor's indentation.
        if let p = d.json["platform"]?.object { platform("", p) }
        if let urls = d.json["urls"]?.strings, !urls.isEmpty { slice(inner, "URLs", urls) }
        if !d.annotations.isEmpty { map(inner, "Annotations", d.annotations) }
        if let embedded = (try? d.embeddedData()) ?? nil, !embedded.isEmpty { data(inner, "Data", embedded) }
    }

    private mutating func manifest(_ prefix: String, _ m: Manifest) {
        pprint(prefix, "Schema Version", m.json["schemaVersion"]?.int64.map { String($0) } ?? "0")
        pprint(prefix, "Media Type", m.json["mediaType"]?.string ?? "")
        if let artifactType = m.json["artifactType"]?.string, !artifactType.isEmpty {
            pprint(prefix, "Artifact Type", artifactType)
        }
        pprint(prefix, "Config")
        descriptor(prefix + "\t", m.config)
        if !m.layers.isEmpty {
            pprint(prefix, "Layers")
            for layer in m.layers { descriptor(prefix + "\t", layer) }
        }
        if let subject = m.subject {
            pprint(prefix, "Subject")
            descriptor(prefix + "\t", subject)
        }
        if !m.annotations.isEmpty { map(prefix, "Annotations", m.annotations) }
    }

    private mutating func image(_ prefix: String, _ image: ImageConfig) {
        if let created = image.created {
            pprint(prefix, "Created", Timestamp.normalize(created) ?? created)
        }
        pprint(prefix, "Author", image.author ?? "")
        platform(prefix, image.json)
        runConfig(prefix, image.runConfig)
    }

    private mutating func runConfig(_ prefix: String, _ c: JSONObject) {
        pprint(prefix, "Image Config")
        let prefix = prefix + "\t"
        pprint(prefix, "User", c["User"]?.string ?? "")
        let escaped = c["ArgsEscaped"]?.bool == true ? " (escaped)" : ""
        if let entrypoint = c["Entrypoint"]?.strings, !entrypoint.isEmpty { slice(prefix, "Entrypoint" + escaped, entrypoint) }
        slice(prefix, "Command" + escaped, c["Cmd"]?.strings ?? [])
        if let dir = c["WorkingDir"]?.string, !dir.isEmpty { pprint(prefix, "Working Directory", dir) }
        if let env = c["Env"]?.strings, !env.isEmpty { slice(prefix, "Environment", env) }
        if let signal = c["StopSignal"]?.string, !signal.isEmpty { pprint(prefix, "Stop Signal", signal) }
        if let ports = c["ExposedPorts"]?.object, !ports.isEmpty { set(prefix, "Exposed Ports", ports.keys) }
        if let volumes = c["Volumes"]?.object, !volumes.isEmpty { set(prefix, "Volumes", volumes.keys) }
        if let labels = c["Labels"]?.object?.stringMap, !labels.isEmpty { map(prefix, "Labels", labels) }
    }

    /// The history table: Go's text/tabwriter with min width 4, padding 1, spaces; cells
    /// quoted only when needed, created as RFC 3339 with nanoseconds.
    private mutating func history(_ rows: [ImageStat.HistoryRow]) {
        var lines = [["LAYER", "CREATED", "CREATED BY", "SIZE", "COMMENT"]]
        for row in rows {
            let created = Timestamp.normalize(row.entry.created) ?? row.entry.created
            lines.append([
                row.layer?.digest.description ?? "<none>",
                GoText.quoteIfNeeded(created, precise: false),
                GoText.quoteIfNeeded(row.entry.createdBy, precise: false),
                row.layer.map { GoText.humanSize($0.size) } ?? "<none>",
                GoText.quoteIfNeeded(row.entry.comment, precise: false),
            ])
        }
        var widths = [Int](repeating: 4, count: 4)
        for cells in lines {
            for i in 0..<4 { widths[i] = max(widths[i], cells[i].unicodeScalars.count + 1) }
        }
        for cells in lines {
            var text = ""
            for i in 0..<4 {
                text += cells[i] + String(repeating: " ", count: widths[i] - cells[i].unicodeScalars.count)
            }
            line(text + cells[4])
        }
    }
}
