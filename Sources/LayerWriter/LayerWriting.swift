import Basics
import OCI
import UpperFormat
/// Adding a layer to an image, what `repack`, `insert` and `raw add-layer` share (umoci's
/// `mutate` package): the layer is written through DirectoryDiff, started over when a file
/// changes while it is read, and then appended with its diff_id and history entry.
public enum LayerWriting {
    public static let attempts = 3

    /// The new layer, or nil when `fill` produced no entry at all (nothing changed), and every
    /// entry the walk saw (the baseline for the next repack). `restarted` hears of each start
    /// over.
    public static func write(
        compression: LayerCompression, layout: ImageLayout, masks: [String] = [], baseline: UpperBaseline? = nil,
        restarted: (DirectoryDiff.FileChanged) -> Void = { _ in },
        fill: (inout DirectoryDiff) throws(DirectoryDiff.Failure) -> Void
    ) throws(StoreError) -> (layer: (descriptor: Descriptor, diffID: Digest)?, seen: UpperBaseline) {
        var lastChange = ""
        for _ in 0..<attempts {
            let writer = try LayerBlobWriter(layout: layout, compression: compression)
            var diff = DirectoryDiff(writer: writer, masks: masks, baseline: baseline)
            do throws(DirectoryDiff.Failure) {
                try fill(&diff)
                try diff.addWhiteoutsForRemovedEntries()
                if diff.entryCount == 0 {
                    writer.abort()
                    return (nil, diff.seen)
                }
                try diff.finish()
            } catch {
                writer.abort()
                switch error {
                case .changed(let change):
                    lastChange = change.path
                    restarted(change)
                    continue
                case .store(let error):
                    throw error
                }
            }
            return (try writer.finish(), diff.seen)
        }
        throw StoreError(.busy, "\(lastChange) kept changing while it was being read (\(attempts) attempts); stop writing to it and try again")
    }
}

extension Image {
    /// Adds what a layer-writing command made: the layer with its diff_id and history entry,
    /// or, when nothing changed (no layer), the history entry alone (an empty layer's).
    public mutating func add(_ layer: (descriptor: Descriptor, diffID: Digest)?, history: History?) {
        if let layer {
            appendLayer(layer.descriptor, diffID: layer.diffID, history: history)
        } else if let history {
            config.appendHistory(history)
        }
    }
}
