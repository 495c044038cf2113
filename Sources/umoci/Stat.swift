import ArgumentParser
import Foundation
import LayerStore

extension Umoci {
    struct Stat: LoggingCommand {
        static let configuration = CommandConfiguration(
            commandName: "stat", abstract: "displays status information of an image manifest")

        @OptionGroup var global: GlobalOptions
        @OptionGroup var image: ImageOptions
        @Flag(name: .customLong("json"), help: "output the stat information as a JSON encoded blob")
        var json = false
        @Argument(help: .hidden) var extra: [String] = []

        func run() throws {
            try expectArguments(extra, 0, "none")
            let ref = try image.reference()
            let loaded = try ImageLayout.withLocked(ref.layout, .shared) { try $0.loadImage(tag: ref.tag) }
            let history = ImageHistory(loaded)
            if json {
                var out = JSONObject()
                out["manifest"] = .object(JSONObject([
                    "descriptor": .object(loaded.path.manifest.json), "blob": .object(loaded.manifest.json),
                ]))
                out["config"] = .object(JSONObject([
                    "descriptor": .object(loaded.manifest.config.json), "blob": .object(loaded.config.json),
                ]))
                out["history"] = .array(history.rows.map(\.json))
                print(JSON.object(out).text)
            } else {
                print(history.table(), terminator: "")
            }
        }
    }
}

/// An image's history entries paired with the layers they created, as `umoci stat` shows them:
/// each entry that is not `empty_layer` takes the next layer of the manifest.
struct ImageHistory {
    struct Row {
        var layer: Descriptor?
        var diffID: String
        var entry: History

        /// `{"layer","diff_id","created","created_by","author","comment","empty_layer"}`, with the
        /// last three omitted when empty, as umoci writes them.
        var json: JSON {
            var o = JSONObject()
            o["layer"] = layer.map { .object($0.json) } ?? .null
            o["diff_id"] = .string(diffID)
            o["created"] = .string(entry.created)
            o["created_by"] = .string(entry.createdBy)
            if !entry.author.isEmpty { o["author"] = .string(entry.author) }
            if !entry.comment.isEmpty { o["comment"] = .string(entry.comment) }
            if entry.emptyLayer { o["empty_layer"] = .bool(true) }
            return .object(o)
        }
    }

    var rows: [Row] = []

    init(_ image: Image) {
        let layers = image.manifest.layers
        let diffIDs = image.config.diffIDs
        var next = 0
        for entry in image.config.history {
            if entry.emptyLayer || next >= layers.count {
                rows.append(Row(layer: nil, diffID: "", entry: entry))
            } else {
                rows.append(Row(layer: layers[next], diffID: next < diffIDs.count ? diffIDs[next] : "", entry: entry))
                next += 1
            }
        }
    }

    /// The tab-aligned table of umoci 0.4.7 (Go tabwriter: min width 4, padding 1).
    func table() -> String {
        var lines = [["LAYER", "CREATED", "CREATED BY", "SIZE", "COMMENT"]]
        for row in rows {
            let clean = { (s: String) in s.replacingOccurrences(of: "\t", with: " ") }
            lines.append([
                row.layer?.digest.description ?? "<none>",
                row.entry.created,
                clean(row.entry.createdBy),
                row.layer.map { humanSize($0.size) } ?? "<none>",
                clean(row.entry.comment),
            ])
        }
        var widths = [Int](repeating: 4, count: 4)
        for line in lines { for i in 0..<4 { widths[i] = max(widths[i], line[i].count + 1) } }
        var out = ""
        for line in lines {
            for i in 0..<4 { out += line[i] + String(repeating: " ", count: widths[i] - line[i].count) }
            out += line[4] + "\n"
        }
        return out
    }
}

/// A size as go-units' HumanSize prints it: decimal units, four significant digits.
func humanSize(_ bytes: Int64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1000, unit < units.count - 1 {
        value /= 1000
        unit += 1
    }
    return String(format: "%.4g", value) + units[unit]
}
