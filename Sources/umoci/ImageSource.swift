import ArgumentParser
import BundleKit
import Basics
import OCI
import LayerView
import BundleFormat
import Registry

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
        try ImageLayout.withLocked(path, .shared) { layout in
            // Manifest and index as received (their digests verified by the client).
            for fetched in [resolved.index, resolved.manifest].compactMap({ $0 }) {
                walk.append(fetched.descriptor)
                let target = layout.blobPath(fetched.digest)
                if Files.exists(target) { continue }
                try Files.makeDirectories(Files.directoryName(target))
                try Files.writeAtomically(target, fetched.bytes)
            }
            var blobs = [resolved.parsed.config]
            if layers { blobs += resolved.parsed.layers }
            var downloads: [BlobDownload] = []
            for blob in blobs where !downloads.contains(where: { $0.descriptor.digest == blob.digest }) {
                let target = layout.blobPath(blob.digest)
                if Files.exists(target) { continue }
                try Files.makeDirectories(Files.directoryName(target))
                downloads.append(BlobDownload(blob, into: target))
            }
            // The layers in parallel, each on its own connection.
            let source = "\(reference.registry)/\(reference.repository)"
            try RegistryClient.fetch(downloads, from: reference, options: options, starting: { blob in
                Log.info("fetching \(blob.digest) (\(blob.size) bytes) from \(source)")
            })
        }
        return PreparedImage(layout: path, selection: .descriptors(DescriptorPath(walk: walk)),
                             source: resolved.pinnedReference.description, requested: reference.description)
    }
}
