import ArgumentParser
import Basics
import OCI
import BundleFormat

extension Umoci {
    /// umoci 0.6's hidden `raw mtree-validate`, which its tests use to check an extracted
    /// rootfs: prints one go-mtree delta per line and fails when there is any.
    struct RawMtreeValidate: LoggingCommand {
        static let configuration = CommandConfiguration(
            commandName: "mtree-validate", abstract: #"validate an mtree manifest (akin to "go-mtree validate")"#,
            discussion: """
                usage: umoci raw mtree-validate --manifest <manifest.mtree> --path <directory>

                Validate "<directory>" against the mtree(8) manifest in "<manifest.mtree>". Meant for \
                integration tests, as umoci's own.
                """,
            shouldDisplay: false)

        @OptionGroup var global: GlobalOptions
        @Option(name: [.customLong("manifest"), .customShort("f"), .customLong("file")], help: "mtree manifest to validate")
        var manifest: String?
        @Option(name: [.customLong("path"), .customShort("p")], help: "root path the the mtree manifest is relative to")
        var path: String?
        @Option(name: [.customLong("add-keywords"), .customShort("K")],
                help: "add the specified keywords to the set used for validation (delimited by comma or space)")
        var addKeywords: String?
        @Option(name: [.customLong("use-keywords"), .customShort("k")],
                help: "use only the specified keywords for validation (delimited by comma or space)")
        var useKeywords: String?
        @Flag(name: .customLong("umoci-keywords"), help: "use the default set of keywords used by umoci")
        var umociKeywords = false
        /// Files are read as a rootless umoci reads them either way (an unreadable file of the
        /// user's is made readable for the read), so the flag changes nothing here.
        @Flag(name: .customLong("rootless"), help: "enable rootless command support")
        var rootless = false

        func run() throws {
            guard let manifest, let path else {
                throw UsageError("Required flag \(GoText.quote(manifest == nil ? "manifest" : "path")) not set")
            }
            guard !manifest.isEmpty else { throw UsageError("--manifest must be a valid path") }
            guard !path.isEmpty else { throw UsageError("--path must be a valid path") }
            Log.info("parsing mtree manifest ...")
            let spec: MtreeManifest
            do {
                spec = try MtreeManifest.read(manifest)
            } catch {
                throw StoreError(Files.exists(manifest) ? "parse mtree manifest: \(error.message)" : "open mtree manifest: \(error.message)")
            }
            let keywords = MtreeValidation.compareKeywords(manifest: spec, use: useKeywords.map(MtreeValidation.parseKeywords),
                                                           add: addKeywords.map(MtreeValidation.parseKeywords) ?? [], umoci: umociKeywords)
            Log.debug("computed set of keywords for mtree comparison: \(keywords.joined(separator: ","))")
            let deltas: [MtreeValidation.Delta]
            do {
                deltas = try MtreeValidation.check(root: path, manifest: spec, keywords: keywords)
            } catch {
                throw StoreError("check mtree manifest \(GoText.quote(manifest)) against root \(GoText.quote(path)): \(error.message)")
            }
            for delta in deltas { print(delta) }
            guard deltas.isEmpty else { throw StoreError("validation failed: \(deltas.count) differences found") }
            Log.info("no errors found during mtree validation")
        }
    }
}
