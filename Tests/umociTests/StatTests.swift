import Foundation
import OCI
import Testing
import TestSupport

/// `umoci stat`'s human output against umoci 0.6's, byte for byte. The expected texts follow
/// umoci 0.6's source, utils.go (SPDX header, "Copyright (C) 2016-2025"):
/// - `ManifestStat.Format`: "== MANIFEST ==", then "\n== CONFIG ==" only when `Config != nil`
///   (an image config, or a config umoci parses or finds embedded: see Umoci06Tests), then "\n== HISTORY ==" only when `History != nil`
///   (the config is an `ispec.Image`; `Stat()` makes the list even when it is empty);
/// - `pprint`: "key:" or "key: v1, v2"; a value with "," is always `strconv.Quote`d, others go
///   through `quote(s, precise=true)`: quoted when `strconv.Quote` changes them, they are
///   empty, or contain white space;
/// - `pprintSlice`/`pprintMap`/`pprintSet`: "(empty)" for nothing; one quoted item per line
///   under a tab; map keys sorted and quoted like values; set members joined on one line;
/// - `pprintDescriptor`: Media Type, Artifact Type (when set), Digest, Size (go-units
///   HumanSize), Platform (printed with prefix "" — not the descriptor's indentation), URLs,
///   Annotations, Data ("(N bytes)" and an xxd dump of at most 256 bytes, then
///   "....  (extra N bytes omitted)");
/// - `pprintManifest`: Schema Version, Media Type, Artifact Type, Config, Layers (when any),
///   Subject, Annotations; then the manifest's own descriptor (as index.json holds it);
/// - `pprintImage`: Created (RFC 3339 with nanoseconds, only when set), Author, Platform (OS,
///   OS Version, OS Features, Architecture with " (variant)"), Image Config: User, Entrypoint
///   (when set), Command (always), Working Directory, Environment, Stop Signal, Exposed Ports,
///   Volumes, Labels (each when set), with " (escaped)" after Entrypoint/Command for
///   ArgsEscaped;
/// - `historyStatList.pprint`: tabwriter.NewWriter(w, 4, 2, 1, ' ', 0) over LAYER, CREATED,
///   CREATED BY, SIZE, COMMENT; created, created_by and comment through `quote(s, false)`.
@Suite struct StatTests {
    /// A layout built blob by blob, so that every field of the expected output is chosen.
    struct Fixture {
        let dir = TemporaryDirectory()
        let L: String
        let layout: ImageLayout

        init() throws {
            L = dir("L")
            ok(try umoci("init", "--layout", L))
            layout = try ImageLayout(opening: L)
        }

        func blob(_ text: String, _ mediaType: String) throws -> Descriptor {
            try layout.putBlob(Array(text.utf8), mediaType: mediaType)
        }

        /// Tags a manifest blob, with extra descriptor fields (as JSON members) in index.json.
        func tag(_ name: String, _ manifest: Descriptor, extra: KeyValuePairs<String, JSON> = [:]) throws {
            var json = manifest.json
            for (k, v) in extra { json[k] = v }
            try layout.setTag(name, to: try Descriptor(json: json))
        }

        func stat(_ tag: String) throws -> [UInt8] {
            let out = try umoci("stat", "--image", L + ":" + tag)
            ok(out)
            return out.stdoutBytes
        }
    }

    static func ref(_ d: Descriptor) -> String {
        #""mediaType":"\#(d.mediaType)","digest":"\#(d.digest)","size":\#(d.size)"#
    }

    /// The descriptor lines pprintDescriptor writes for a plain descriptor.
    static func descriptor(_ prefix: String, _ d: Descriptor) -> String {
        "\(prefix)Descriptor:\n\(prefix)\tMedia Type: \(d.mediaType)\n\(prefix)\tDigest: \(d.digest)\n\(prefix)\tSize: \(d.size)B\n"
    }

    /// One line of the history table, each of the first four cells padded to its column width.
    static func row(_ cells: [String], _ widths: [Int]) -> String {
        var line = ""
        for (i, w) in widths.enumerated() { line += cells[i] + String(repeating: " ", count: w - cells[i].count) }
        return line + cells[4] + "\n"
    }

    static func expect(_ bytes: [UInt8], _ expected: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text == expected, sourceLocation: sourceLocation)
        if text != expected {
            for (a, b) in zip(text.split(separator: "\n", omittingEmptySubsequences: false),
                              expected.split(separator: "\n", omittingEmptySubsequences: false)) where a != b {
                Issue.record("first difference:\n got: \(a.debugDescription)\nwant: \(b.debugDescription)", sourceLocation: sourceLocation)
                break
            }
        }
    }

    @Test func blankImage() throws {
        let f = try Fixture()
        ok(try umoci("new", "--image", f.L + ":t", environment: ["SOURCE_DATE_EPOCH": "1234"]))
        let path = try f.layout.resolveImage(tag: "t")
        let m = path.manifest
        let c = try f.layout.loadImage(path).manifest.config
        Self.expect(try f.stat("t"), """
            == MANIFEST ==
            Schema Version: 2
            Media Type: application/vnd.oci.image.manifest.v1+json
            Config:
            \(Self.descriptor("\t", c))\(Self.descriptor("", m))\tAnnotations:
            \t\torg.opencontainers.image.ref.name: t

            == CONFIG ==
            Created: 1970-01-01T00:20:34Z
            Author: ""
            Platform:
            \tOS: linux
            \tArchitecture: amd64
            Image Config:
            \tUser: ""
            \tCommand: (empty)
            \(Self.descriptor("", c))
            == HISTORY ==
            LAYER CREATED CREATED BY SIZE COMMENT

            """)
    }

    /// No `created`, one layer, one history entry.
    @Test func minimalImage() throws {
        let f = try Fixture()
        let c = try f.blob(#"{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:\#(String(repeating: "d", count: 64))"]},"history":[{"created":"2020-01-01T00:00:00Z","created_by":"umoci insert"}]}"#, MediaType.imageConfig)
        let layer = try Descriptor(json: try JSON.parse(#"{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:\#(String(repeating: "a", count: 64))","size":5000}"#).object!)
        let m = try f.blob(#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{\#(Self.ref(c))},"layers":[{\#(Self.ref(layer))}]}"#, MediaType.imageManifest)
        try f.tag("min", m)
        let widths = [72, 21, 13, 5]
        Self.expect(try f.stat("min"), """
            == MANIFEST ==
            Schema Version: 2
            Media Type: application/vnd.oci.image.manifest.v1+json
            Config:
            \(Self.descriptor("\t", c))Layers:
            \tDescriptor:
            \t\tMedia Type: application/vnd.oci.image.layer.v1.tar+gzip
            \t\tDigest: \(layer.digest)
            \t\tSize: 5kB
            \(Self.descriptor("", m))\tAnnotations:
            \t\torg.opencontainers.image.ref.name: min

            == CONFIG ==
            Author: ""
            Platform:
            \tOS: linux
            \tArchitecture: amd64
            Image Config:
            \tUser: ""
            \tCommand: (empty)
            \(Self.descriptor("", c))
            == HISTORY ==
            \(Self.row(["LAYER", "CREATED", "CREATED BY", "SIZE", "COMMENT"], widths))\
            \(Self.row([layer.digest.description, "2020-01-01T00:00:00Z", "umoci insert", "5kB", ""], widths))
            """)
    }

    /// Every image-config field, ArgsEscaped, platform fields, a layer descriptor with
    /// platform, URLs and annotations, and history times with offsets and fractions.
    @Test func everyConfigField() throws {
        let f = try Fixture()
        let d1 = "sha256:" + String(repeating: "1", count: 64), d2 = "sha256:" + String(repeating: "2", count: 64)
        let c = try f.blob(#"""
            {"created":"2024-01-02T03:04:05.123456789+01:00","author":"A U Thor <a@example.com>","architecture":"arm64","os":"linux","os.version":"5.10","os.features":["f1","f,2"],"variant":"v8","config":{"User":"1000:1000","ExposedPorts":{"8080/tcp":{},"53/udp":{}},"Env":["PATH=/bin","EMPTY="," lead"],"Entrypoint":["/bin/sh","-c"],"Cmd":["echo hi","x"],"Volumes":{"/var/data":{},"/a b":{}},"WorkingDir":"/srv/app","Labels":{"org.example":"1","multi":"a\nb","comma":"x,y"},"StopSignal":"SIGTERM","ArgsEscaped":true},"rootfs":{"type":"layers","diff_ids":["\#(d1)","\#(d2)"]},"history":[{"created":"2024-01-02T03:04:05Z","created_by":"/bin/sh -c #(nop) ADD file","comment":"first"},{"created":"2024-01-02T03:04:06.500+00:00","created_by":"umoci config","empty_layer":true},{"created":"2024-01-02T03:04:07-05:30","created_by":"tab\there","author":"x"}]}
            """#, MediaType.imageConfig)
        let l1 = #"{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"\#(d1)","size":1234567,"urls":["https://example.com/a b"],"annotations":{"k":"v"},"platform":{"architecture":"amd64","os":"linux"}}"#
        let l2 = #"{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"\#(d2)","size":999}"#
        let m = try f.blob(#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{\#(Self.ref(c))},"layers":[\#(l1),\#(l2)]}"#, MediaType.imageManifest)
        try f.tag("full", m)
        let widths = [72, 26, 27, 8]
        Self.expect(try f.stat("full"), """
            == MANIFEST ==
            Schema Version: 2
            Media Type: application/vnd.oci.image.manifest.v1+json
            Config:
            \(Self.descriptor("\t", c))Layers:
            \tDescriptor:
            \t\tMedia Type: application/vnd.oci.image.layer.v1.tar+gzip
            \t\tDigest: \(d1)
            \t\tSize: 1.235MB
            Platform:
            \tOS: linux
            \tArchitecture: amd64
            \t\tURLs:
            \t\t\t"https://example.com/a b"
            \t\tAnnotations:
            \t\t\tk: v
            \tDescriptor:
            \t\tMedia Type: application/vnd.oci.image.layer.v1.tar
            \t\tDigest: \(d2)
            \t\tSize: 999B
            \(Self.descriptor("", m))\tAnnotations:
            \t\torg.opencontainers.image.ref.name: full

            == CONFIG ==
            Created: 2024-01-02T03:04:05.123456789+01:00
            Author: "A U Thor <a@example.com>"
            Platform:
            \tOS: linux
            \tOS Version: 5.10
            \tOS Features: f1, "f,2"
            \tArchitecture: arm64 (v8)
            Image Config:
            \tUser: 1000:1000
            \tEntrypoint (escaped):
            \t\t/bin/sh
            \t\t-c
            \tCommand (escaped):
            \t\t"echo hi"
            \t\tx
            \tWorking Directory: /srv/app
            \tEnvironment:
            \t\tPATH=/bin
            \t\tEMPTY=
            \t\t" lead"
            \tStop Signal: SIGTERM
            \tExposed Ports: 53/udp, 8080/tcp
            \tVolumes: "/a b", /var/data
            \tLabels:
            \t\tcomma: "x,y"
            \t\tmulti: "a\\nb"
            \t\torg.example: 1
            \(Self.descriptor("", c))
            == HISTORY ==
            \(Self.row(["LAYER", "CREATED", "CREATED BY", "SIZE", "COMMENT"], widths))\
            \(Self.row([d1, "2024-01-02T03:04:05Z", "/bin/sh -c #(nop) ADD file", "1.235MB", "first"], widths))\
            \(Self.row(["<none>", "2024-01-02T03:04:06.5Z", "umoci config", "<none>", ""], widths))\
            \(Self.row([d2, "2024-01-02T03:04:07-05:30", #""tab\there""#, "999B", ""], widths))
            """)
    }

    @Test func annotationsWithSpecialCharacters() throws {
        let f = try Fixture()
        let c = try f.blob(#"{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#, MediaType.imageConfig)
        let m = try f.blob(#"""
            {"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{\#(Self.ref(c))},"layers":[],"annotations":{"plain":"value","space key":"a b","comma":"a,b","quote":"say \"hi\"","newline":"l1\nl2","empty":"","nbsp":"\u00a0","unicode":"héllo","tab\tkey":"t"}}
            """#, MediaType.imageManifest)
        try f.tag("a", m)
        Self.expect(try f.stat("a"), #"""
            == MANIFEST ==
            Schema Version: 2
            Media Type: application/vnd.oci.image.manifest.v1+json
            Config:
            \#(Self.descriptor("\t", c))Annotations:
            	comma: "a,b"
            	empty: ""
            	nbsp: "\u00a0"
            	newline: "l1\nl2"
            	plain: value
            	quote: "say \"hi\""
            	"space key": "a b"
            	"tab\tkey": t
            	unicode: héllo
            \#(Self.descriptor("", m))	Annotations:
            		org.opencontainers.image.ref.name: a

            == CONFIG ==
            Author: ""
            Platform:
            	OS: linux
            	Architecture: amd64
            Image Config:
            	User: ""
            	Command: (empty)
            \#(Self.descriptor("", c))
            == HISTORY ==
            LAYER CREATED CREATED BY SIZE COMMENT

            """#)
    }

    /// image-spec 1.1 artifact: artifactType, the empty config embedded as `data` (no blob
    /// file), no layers. The config is JSON but no image config: a CONFIG section with its
    /// descriptor only, no HISTORY (umoci 0.6 `Stat`: `stat.Config` without `Image`).
    @Test func artifactWithEmbeddedEmptyConfigAndNoLayers() throws {
        let f = try Fixture()
        let empty = try Descriptor(json: try JSON.parse(#"{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"data":"e30="}"#).object!)
        #expect(!f.layout.hasBlob(empty.digest))
        let m = try f.blob(#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.example.thing","config":\#(JSON.object(empty.json).text),"layers":[]}"#, MediaType.imageManifest)
        try f.tag("art", m, extra: ["artifactType": .string("application/vnd.example.thing")])
        // xxd of "{}": offset, "7b7d", then 14 missing bytes: 7 of them after a group space
        // (3 columns each) and 7 without (2 each), then two spaces and the text.
        let dump = "0000: 7b7d" + String(repeating: " ", count: 35) + "  {}"
        let emptyLines = "Descriptor:\n\tMedia Type: application/vnd.oci.empty.v1+json\n\tDigest: \(empty.digest)\n\tSize: 2B\n\tData: (2 bytes)\n\t\t\(dump)\n"
        Self.expect(try f.stat("art"), """
            == MANIFEST ==
            Schema Version: 2
            Media Type: application/vnd.oci.image.manifest.v1+json
            Artifact Type: application/vnd.example.thing
            Config:
            \(emptyLines.split(separator: "\n").map { "\t" + $0 + "\n" }.joined())\
            Descriptor:
            \tMedia Type: application/vnd.oci.image.manifest.v1+json
            \tArtifact Type: application/vnd.example.thing
            \tDigest: \(m.digest)
            \tSize: \(m.size)B
            \tAnnotations:
            \t\torg.opencontainers.image.ref.name: art

            == CONFIG ==
            \(emptyLines)
            """)
        let json = try JSON.parse(ok(try umoci("stat", "--image", f.L + ":art", "--json")))
        #expect(json.object?["config"]?.object?["blob"] == .object(JSONObject()))
        #expect(json.object?["history"] == nil)
    }

    /// A config that is not JSON: no CONFIG and no HISTORY section. Layers with embedded data
    /// (dumped, at most 256 bytes) and a subject.
    @Test func artifactWithOpaqueConfigLayersAndSubject() throws {
        let f = try Fixture()
        let c = try f.blob("\u{1}binary", "application/vnd.example.config")
        let small: [UInt8] = Array("hello, world".utf8) + [0x00, 0x7F, 0xA0, 0xAD, 0xFF, 0x21, 0x21, 0x21]
        let big = [UInt8](repeating: 0x41, count: 272)
        func embedded(_ bytes: [UInt8]) throws -> String {
            let d = try DigestHasher.digest(of: bytes)
            return #"{"mediaType":"application/vnd.example.layer","digest":"\#(d)","size":\#(bytes.count),"data":"\#(Base64.encode(bytes))"}"#
        }
        let subject = try f.blob(#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{\#(Self.ref(c))},"layers":[]}"#, MediaType.imageManifest)
        let m = try f.blob(#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{\#(Self.ref(c))},"layers":[\#(try embedded(small)),\#(try embedded(big))],"subject":{\#(Self.ref(subject))}}"#, MediaType.imageManifest)
        try f.tag("opaque", m)
        var expected: [UInt8] = []
        func add(_ s: String) { expected += s.utf8 }
        add("== MANIFEST ==\nSchema Version: 2\nMedia Type: application/vnd.oci.image.manifest.v1+json\nConfig:\n")
        add(Self.descriptor("\t", c))
        add("Layers:\n\tDescriptor:\n\t\tMedia Type: application/vnd.example.layer\n\t\tDigest: \(try DigestHasher.digest(of: small))\n\t\tSize: 20B\n")
        add("\t\tData: (20 bytes)\n\t\t\t0000: 6865 6c6c 6f2c 2077 6f72 6c64 007f a0ad  hello, world..")
        expected += [0xA0, 0x2E, 0x0A]  // U+00A0 is graphic and copied as its byte; U+00AD is not
        add("\t\t\t0010: ff21 2121" + String(repeating: " ", count: 30) + "  ")
        expected += [0xFF, 0x21, 0x21, 0x21, 0x0A]
        add("\tDescriptor:\n\t\tMedia Type: application/vnd.example.layer\n\t\tDigest: \(try DigestHasher.digest(of: big))\n\t\tSize: 272B\n")
        add("\t\tData: (272 bytes)\n")
        for line in 0..<16 {
            add("\t\t\t00\(String(line, radix: 16))0: " + Array(repeating: "4141", count: 8).joined(separator: " ") + "  AAAAAAAAAAAAAAAA\n")
        }
        add("\t\t\t....  (extra 16 bytes omitted)\n")
        add("Subject:\n")
        add(Self.descriptor("\t", subject))
        #expect(m.size == 1089)
        add("Descriptor:\n\tMedia Type: application/vnd.oci.image.manifest.v1+json\n\tDigest: \(m.digest)\n\tSize: 1.089kB\n")
        add("\tAnnotations:\n\t\torg.opencontainers.image.ref.name: opaque\n")
        let got = try f.stat("opaque")
        Self.expect(got, String(decoding: expected, as: UTF8.self))
        #expect(got == expected)
        ok(try umoci("gc", "--layout", f.L))
        #expect(try f.stat("opaque") == expected)
    }

    /// Embedded data is verified against the descriptor like a blob file.
    @Test func embeddedDataIsVerified() throws {
        let f = try Fixture()
        func manifest(_ config: String) throws -> Descriptor {
            try f.blob(#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":\#(config),"layers":[]}"#, MediaType.imageManifest)
        }
        let digest = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        try f.tag("base64", try manifest(#"{"mediaType":"application/vnd.oci.empty.v1+json","digest":"\#(digest)","size":2,"data":"e30"}"#))
        try f.tag("size", try manifest(#"{"mediaType":"application/vnd.oci.empty.v1+json","digest":"\#(digest)","size":3,"data":"e30="}"#))
        // gc walks index.json from its last entry: this one.
        try f.tag("digest", try manifest(#"{"mediaType":"application/vnd.oci.empty.v1+json","digest":"\#(digest)","size":2,"data":"e10="}"#))
        fails(try umoci("stat", "--image", f.L + ":size"), containing: "verified reader size mismatch")
        fails(try umoci("stat", "--image", f.L + ":digest"), containing: "verified reader digest mismatch")
        fails(try umoci("stat", "--image", f.L + ":base64"), containing: "not base64")
        fails(try umoci("gc", "--layout", f.L), containing: "verified reader digest mismatch")
    }
}
