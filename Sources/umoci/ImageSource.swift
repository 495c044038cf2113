import ArgumentParser
import BundleKit
import Basics
import OCI
import LayerView
import BundleFormat
import Registry
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// `--image` of the commands that read an image from a layout or straight from a registry
/// (unpack, raw unpack, stat, raw runtime-config), with skopeo's registry flags.
struct SourceImageOptions: ParsableArguments {
    @Option(name: .customLong("image"), help: "image: 'path[:tag]', 'oci:path[:tag]' or 'docker://host[:port]/repo[:tag|@digest]'")
    var image: String?
    @Option(name: .customLong("creds"), help: "registry credentials USER:PASSWORD (docker:// images)")
    var creds: String?
    @Option(name: .customLong("authfile"), help: "auth file of registry credentials (default: $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json)")
    var authFile: String?
    @Option(name: .customLong("cert-dir"), help: "directory of *.crt CA certificates and *.cert/*.key client pairs for the registry")
    var certDir: String?
    @Option(name: .customLong("tls-verify"), help: "check the registry's TLS certificate (false: also allows plain HTTP)")
    var tlsVerify: Bool = true

    func location() throws -> ImageLocation {
        guard let image else { throw UsageError("missing mandatory argument: --image") }
        do { return try ImageLocation(parsing: image) } catch { throw UsageError(error.message) }
    }

    /// The image ready to be read from a layout: a local one as it is, a registry one after
    /// its manifest, config and (with `layers`) layers were fetched, each verified, into the
    /// index cache's blob layout. That layout is where a mounted bundle finds its base again
    /// after a reboot, without the network; blobs already there are not fetched again.
    func prepare(cache: IndexCache, layers: Bool) throws -> PreparedImage {
        switch try location() {
        case .layout(let reference):
            return PreparedImage(layout: reference.layout, selection: .tag(reference.tag), source: nil)
        case .registry(let reference):
            do {
                return try fetch(reference, cache: cache, layers: layers)
            } catch let error as RegistryError {
                throw StoreError(error.message)
            }
        }
    }

    /// The index cache of a command without --cache-dir (stat, raw runtime-config): where a
    /// registry image's manifest and config are kept.
    static func defaultCache() -> IndexCache {
        let environment = Environment.variables
        return IndexCache.usable(directory: IndexCache.defaultDirectory(environment: environment),
                                 environment: environment, warn: { Log.warn($0) })
    }

    func registryOptions() throws -> RegistryOptions {
        var options = RegistryOptions(authFile: authFile, certDirectory: certDir, tlsVerify: tlsVerify,
                                      environment: Environment.variables, userAgent: "umoci")
        if let creds {
            do { options.credentials = try Credentials(parsing: creds) } catch { throw UsageError(error.message) }
        }
        return options
    }

    private func fetch(_ reference: RegistryReference, cache: IndexCache, layers: Bool) throws -> PreparedImage {
        let options = try registryOptions()
        let client = try RegistryClient(for: reference, options: options)
        let resolved = try client.resolve(reference)
        let path = cache.blobLayoutPath
        if (try? ImageLayout(opening: path)) == nil {
            try Files.makeDirectories(Files.directoryName(path))
            // Or made by another process meanwhile.
            if (try? ImageLayout.create(at: path)) == nil { _ = try ImageLayout(opening: path) }
        }
        var walk: [Descriptor] = []
        try ImageLayout.withLocked(path, .shared) { (layout) throws -> Void in
            // Manifest and index as received (their digests verified by the client).
            for fetched in [resolved.index, resolved.manifest].compactMap({ $0 }) {
                walk.append(fetched.descriptor)
                let target = layout.blobPath(fetched.digest)
                if Files.exists(target) { continue }
                try Files.makeDirectories(Files.directoryName(target))
                try Files.writeAtomically(target, fetched.bytes)
            }
            try fetchBlobs(resolved, from: reference, options: options, into: layout, cache: cache, layers: layers)
        }
        return PreparedImage(layout: path, selection: .descriptors(DescriptorPath(walk: walk)),
                             source: resolved.pinnedReference.description, requested: reference.description)
    }

    /// The config, then (with `layers`) the layers in parallel, each indexed as it arrives.
    private func fetchBlobs(
        _ resolved: ResolvedImage, from reference: RegistryReference, options: RegistryOptions, into layout: ImageLayout,
        cache: IndexCache, layers: Bool
    ) throws {
            let source = "\(reference.registry)/\(reference.repository)"
        let starting: @Sendable (Descriptor) -> Void = { blob in
            Log.info("fetching \(blob.digest) (\(blob.size) bytes) from \(source)")
        }
        // The config first: its diff_ids are what each layer's index checks as it arrives.
        let config = resolved.parsed.config
        let configPath = layout.blobPath(config.digest)
        if !Files.exists(configPath) {
            try Files.makeDirectories(Files.directoryName(configPath))
            try RegistryClient.fetch([BlobDownload(config, into: configPath)], from: reference, options: options, starting: starting)
        }
        guard layers else { return }
        let layerList = resolved.parsed.layers
        let diffIDs = try SourceImageOptions.diffIDs(try layout.readBlob(config), config: config.digest, layers: layerList.count)
        var downloads: [BlobDownload] = []
        for (i, blob) in layerList.enumerated() where !downloads.contains(where: { $0.descriptor.digest == blob.digest }) {
            let target = layout.blobPath(blob.digest)
            if Files.exists(target) { continue }
            try Files.makeDirectories(Files.directoryName(target))
            // One pass: the layer is indexed from the bytes as they arrive (see LayerDownloadIndex).
            let observer = try LayerDownloadIndex(cache: cache, layer: blob, diffID: diffIDs[i])
            downloads.append(BlobDownload(blob, into: target, observer: observer))
        }
        let progress = DownloadProgress.start(downloads.map(\.descriptor))
        defer { progress?.finish() }
        if let progress {
            for (n, d) in downloads.enumerated() {
                guard let observer = d.observer as? LayerDownloadIndex else { continue }
                observer.onProgress = { @Sendable (bytes: Int64) -> Void in progress.update(n, bytes) }
            }
        }
        // The layers in parallel, each on its own connection.
        try RegistryClient.fetch(downloads, from: reference, options: options, starting: starting)
    }
}

extension SourceImageOptions {
    /// The config's diff_ids, one per layer of the manifest.
    static func diffIDs(_ bytes: [UInt8], config digest: Digest, layers: Int) throws -> [Digest] {
        let json: JSON
        do { json = try JSON.parse(bytes) } catch { throw StoreError(.corrupt, "config \(digest) is not valid JSON: \(error)") }
        let texts = try ImageConfig(json: json, digest: digest).diffIDs
        guard texts.count == layers else {
            throw StoreError(.corrupt, "image config \(digest): manifest has \(layers) layers but config has \(texts.count) diff_ids")
        }
        var out: [Digest] = []
        for (i, text) in texts.enumerated() {
            do { out.append(try Digest(parsing: text)) } catch {
                throw error.wrapped("config \(digest): diff_id \(i)", subject: "\(digest)")
            }
        }
        return out
    }
}

/// A layer's index built from its blob while the blob downloads, and stored in the index cache
/// once the blob is verified and in place: the layer is read once, from the network (issue 18).
///
/// Ownership: used only by the worker thread that downloads the layer (BlobObserver's order),
/// hence @unchecked Sendable; `onProgress` is set before the downloads start.
final class LayerDownloadIndex: BlobObserver, @unchecked Sendable {
    let layer: Descriptor
    private let pending: IndexCache.PendingIndex
    private let stream: LayerIndexer.Stream
    private var index: LayerIndex?
    var onProgress: (@Sendable (Int64) -> Void)?

    init(cache: IndexCache, layer: Descriptor, diffID: Digest) throws(StoreError) {
        self.layer = layer
        pending = try cache.pendingIndex(layer)
        // The download hashes the blob and checks its digest before `verified`.
        stream = try LayerIndexer.Stream(layer: layer, diffID: diffID, zstdCopy: pending.zstdCopy, blobDigestVerifiedByCaller: true)
    }

    func consume(_ chunk: UnsafeRawBufferPointer) throws(StoreError) { try stream.push(chunk) }

    func progress(_ received: Int64) { onProgress?(received) }

    /// The tar scan, the inflated stream's end and the diff_id are checked before the blob is
    /// put in place: a layer that fails them leaves neither blob nor index.
    func verified() throws(StoreError) { index = try stream.finish() }

    func placed(at path: String) throws(StoreError) {
        guard let index else { return }
        try pending.store(index, blob: path)
    }

    func abandon() {
        stream.close()
        pending.discard()
    }
}

/// One line per downloading layer on a terminal (stderr only, as IndexProgress): bytes received
/// of its size, redrawn in place at most every 100 ms. Silent without a terminal.
final class DownloadProgress: Sendable {
    struct State {
        var done: [Int64]
        var lastDraw: Int64 = 0
        var drawn = false
    }

    let layers: [Descriptor]
    let state: Mutex<State>

    private init(_ layers: [Descriptor]) {
        self.layers = layers
        state = Mutex(State(done: Array(repeating: 0, count: layers.count)))
    }

    static func start(_ layers: [Descriptor]) -> DownloadProgress? {
        guard IndexProgress.enabled, !layers.isEmpty else { return nil }
        return DownloadProgress(layers)
    }

    func update(_ layer: Int, _ bytes: Int64) {
        state.withLock { s in
            s.done[layer] = bytes
            var ts = timespec()
            clock_gettime(CLOCK_MONOTONIC, &ts)
            let now = Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
            guard now - s.lastDraw >= 100 || bytes == layers[layer].size else { return }
            s.lastDraw = now
            draw(&s)
        }
    }

    func finish() {
        state.withLock { s in if s.drawn { draw(&s) } }
    }

    /// All lines, the cursor first moved back up over the ones drawn before.
    private func draw(_ s: inout State) {
        var text = s.drawn ? "\u{1B}[\(layers.count)A" : ""
        for (i, layer) in layers.enumerated() {
            let hex = layer.digest.encoded.prefix(12)
            let state = s.done[i] == layer.size ? "done" : "\(IndexProgress.mebibytes(s.done[i]))/\(IndexProgress.mebibytes(layer.size)) MiB"
            text += "\r   • layer \(i + 1)/\(layers.count) \(layer.digest.algorithm):\(hex)  fetched and indexed \(state)\u{1B}[K\n"
        }
        s.drawn = true
        text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    }
}
