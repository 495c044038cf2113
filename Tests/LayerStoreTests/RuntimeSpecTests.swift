import Testing
#if canImport(Glibc)
import Glibc
#endif
@testable import Basics
@testable import OCI

@Suite("RuntimeSpec")
struct RuntimeSpecTests {
    /// A linux/amd64 ImageConfig whose `config` member is the JSON `run`.
    static func config(_ run: String = "{}", created: String = "2026-11-28T21:36:54.184167315Z") throws -> ImageConfig {
        var config = ImageConfig(created: created, architecture: "amd64", os: "linux")
        config.runConfig = try #require(try JSON.parse(run).object)
        return config
    }

    static func generate(_ config: ImageConfig, warnings: inout [String]) throws(StoreError) -> JSONObject {
        try RuntimeSpec.generate(config: config, rootfs: nil, rootPath: ".") { warnings.append($0) }
    }

    static func generate(_ config: ImageConfig) throws(StoreError) -> JSONObject {
        var warnings: [String] = []
        return try generate(config, warnings: &warnings)
    }

    static func text(_ spec: JSONObject, indent: String = "\t") -> String {
        String(decoding: JSON.object(spec).serialized(indent: indent), as: UTF8.self) + "\n"
    }

    /// umoci 0.4.7's output for a fresh `umoci new` image, less the three empty annotations
    /// that 0.6 (which this project follows there) leaves out.
    static let freshSample = """
{
	"ociVersion": "1.0.0",
	"process": {
		"terminal": true,
		"user": {
			"uid": 0,
			"gid": 0
		},
		"args": [
			"sh"
		],
		"env": [
			"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"TERM=xterm"
		],
		"cwd": "/",
		"capabilities": {
			"bounding": [
				"CAP_AUDIT_WRITE",
				"CAP_KILL",
				"CAP_NET_BIND_SERVICE"
			],
			"effective": [
				"CAP_AUDIT_WRITE",
				"CAP_KILL",
				"CAP_NET_BIND_SERVICE"
			],
			"inheritable": [
				"CAP_AUDIT_WRITE",
				"CAP_KILL",
				"CAP_NET_BIND_SERVICE"
			],
			"permitted": [
				"CAP_AUDIT_WRITE",
				"CAP_KILL",
				"CAP_NET_BIND_SERVICE"
			],
			"ambient": [
				"CAP_AUDIT_WRITE",
				"CAP_KILL",
				"CAP_NET_BIND_SERVICE"
			]
		},
		"rlimits": [
			{
				"type": "RLIMIT_NOFILE",
				"hard": 1024,
				"soft": 1024
			}
		],
		"noNewPrivileges": true
	},
	"root": {
		"path": "."
	},
	"hostname": "umoci-default",
	"mounts": [
		{
			"destination": "/proc",
			"type": "proc",
			"source": "proc"
		},
		{
			"destination": "/dev",
			"type": "tmpfs",
			"source": "tmpfs",
			"options": [
				"nosuid",
				"strictatime",
				"mode=755",
				"size=65536k"
			]
		},
		{
			"destination": "/dev/pts",
			"type": "devpts",
			"source": "devpts",
			"options": [
				"nosuid",
				"noexec",
				"newinstance",
				"ptmxmode=0666",
				"mode=0620",
				"gid=5"
			]
		},
		{
			"destination": "/dev/shm",
			"type": "tmpfs",
			"source": "shm",
			"options": [
				"nosuid",
				"noexec",
				"nodev",
				"mode=1777",
				"size=65536k"
			]
		},
		{
			"destination": "/dev/mqueue",
			"type": "mqueue",
			"source": "mqueue",
			"options": [
				"nosuid",
				"noexec",
				"nodev"
			]
		},
		{
			"destination": "/sys",
			"type": "sysfs",
			"source": "sysfs",
			"options": [
				"nosuid",
				"noexec",
				"nodev",
				"ro"
			]
		},
		{
			"destination": "/sys/fs/cgroup",
			"type": "cgroup",
			"source": "cgroup",
			"options": [
				"nosuid",
				"noexec",
				"nodev",
				"relatime",
				"ro"
			]
		}
	],
	"annotations": {
		"org.opencontainers.image.architecture": "amd64",
		"org.opencontainers.image.created": "2026-11-28T21:36:54.184167315Z",
		"org.opencontainers.image.os": "linux"
	},
	"linux": {
		"resources": {
			"devices": [
				{
					"allow": false,
					"access": "rwm"
				}
			]
		},
		"namespaces": [
			{
				"type": "pid"
			},
			{
				"type": "network"
			},
			{
				"type": "ipc"
			},
			{
				"type": "uts"
			},
			{
				"type": "mount"
			}
		],
		"maskedPaths": [
			"/proc/kcore",
			"/proc/latency_stats",
			"/proc/timer_list",
			"/proc/timer_stats",
			"/proc/sched_debug",
			"/sys/firmware",
			"/proc/scsi"
		],
		"readonlyPaths": [
			"/proc/asound",
			"/proc/bus",
			"/proc/fs",
			"/proc/irq",
			"/proc/sys",
			"/proc/sysrq-trigger"
		]
	}
}
"""

    @Test func freshImageMatchesUmoci() throws {
        var warnings: [String] = []
        let spec = try Self.generate(Self.config(), warnings: &warnings)
        #expect(Self.text(spec) == Self.freshSample + "\n")
        #expect(warnings.isEmpty)
    }

    static let samples: String = {
        let here = #filePath  // <package>/Tests/LayerStoreTests/RuntimeSpecTests.swift
        var parts = here.split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(3)
        return parts.joined(separator: "/") + "/../shared/docs/umoci-0.4.7-samples"
    }()

    @Test(.enabled(if: Files.exists(samples + "/runtime-config.json")))
    func sharedSampleMatchesUmoci() throws {
        let configJSON = try JSON.parse(Files.read(Self.samples + "/config.json"))
        var config = ImageConfig(created: "", architecture: "", os: "")
        config.json = try #require(configJSON.object)
        var warnings: [String] = []
        let spec = try Self.generate(config, warnings: &warnings)
        #expect(warnings == ["could not parse user spec 'alice' without a rootfs -- defaulting to root:root"])

        // The sample is 0.4.7's, re-indented with two spaces by whoever saved it (which also
        // undid Go's \u003c escaping of "<"), so compare values and member order, not bytes.
        // 0.6 leaves out its empty stopSignal annotation.
        var expected = try #require(try JSON.parse(Files.read(Self.samples + "/runtime-config.json")).object)
        var annotations = expected[object: "annotations"]
        annotations["org.opencontainers.image.stopSignal"] = nil
        expected["annotations"] = .object(annotations)
        #expect(spec == expected)
        #expect(Self.text(spec, indent: "  ").contains(#""org.opencontainers.image.author": "Someone \u003cs@e\u003e""#))
    }

    @Test func imageFieldsAreApplied() throws {
        let config = try Self.config("""
            {"Env": ["TERM=dumb", "A=1", "PATH=/x"], "Entrypoint": ["/bin/sh"], "Cmd": ["-c", "true"],
             "WorkingDir": "/srv", "StopSignal": "SIGTERM",
             "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
             "Volumes": {"/var": {}, "/data": {}},
             "Labels": {"org.opencontainers.image.os": "plan9", "b": "", "a": "x"}}
            """, created: "2026-01-02T03:04:05.120000000+00:00")
        let spec = try Self.generate(config)
        let process = try #require(spec["process"]?.object)
        #expect(process["env"]?.strings == ["PATH=/x", "TERM=dumb", "A=1"])
        #expect(process["args"]?.strings == ["/bin/sh", "-c", "true"])
        #expect(process["cwd"]?.string == "/srv")
        let mounts = try #require(spec["mounts"]?.array)
        #expect(mounts.count == 9)
        #expect(mounts[7] == .object(JSONObject([
            "destination": .string("/data"), "type": .string("tmpfs"), "source": .string("none"),
            "options": .strings(["rw", "nosuid", "nodev", "noexec", "relatime"]),
        ])))
        #expect(mounts[8].object?["destination"]?.string == "/var")
        let annotations = try #require(spec["annotations"]?.object)
        #expect(annotations.keys == [
            "a", "b", "org.opencontainers.image.architecture", "org.opencontainers.image.created",
            "org.opencontainers.image.exposedPorts", "org.opencontainers.image.os", "org.opencontainers.image.stopSignal",
        ])
        #expect(annotations["b"]?.string == "")  // a label keeps its empty value
        #expect(annotations["org.opencontainers.image.os"]?.string == "plan9")  // labels win
        #expect(annotations["org.opencontainers.image.exposedPorts"]?.string == "53/udp,80/tcp")
        #expect(annotations["org.opencontainers.image.stopSignal"]?.string == "SIGTERM")
        #expect(annotations["org.opencontainers.image.created"]?.string == "2026-01-02T03:04:05.12Z")
    }

    @Test func entrypointOrCmdAlone() throws {
        let cmd = try Self.generate(Self.config(#"{"Cmd": ["echo"]}"#))
        #expect(cmd["process"]?.object?["args"]?.strings == ["echo"])
        let entry = try Self.generate(Self.config(#"{"Entrypoint": ["/init"], "Cmd": null}"#))
        #expect(entry["process"]?.object?["args"]?.strings == ["/init"])
    }

    @Test func createdIsFormattedLikeGo() {
        #expect(RuntimeSpec.goTime(nil) == "0001-01-01T00:00:00Z")
        #expect(RuntimeSpec.goTime("2026-11-28T21:36:54.184167315Z") == "2026-11-28T21:36:54.184167315Z")
        #expect(RuntimeSpec.goTime("2026-11-28T21:36:54.000Z") == "2026-11-28T21:36:54Z")
        #expect(RuntimeSpec.goTime("2026-11-28T21:36:54+02:00") == "2026-11-28T21:36:54+02:00")
    }

    @Test func badInputsAreErrors() throws {
        var plan9 = try Self.config()
        plan9.os = "plan9"
        expectError(.unsupported) { try Self.generate(plan9) }
        expectError(.invalidInput) { try Self.generate(Self.config(#"{"Env": ["FOO"]}"#)) }
        expectError(.invalidInput) { try Self.generate(Self.config(#"{"Env": ["=x"]}"#)) }
    }

    // MARK: process.user

    /// A temporary directory, removed (with everything under it) at the end of `body`.
    static func withTemporaryDirectory(_ body: (String) throws -> Void) throws {
        var template = Array("/tmp/runtime-spec-test.XXXXXX".utf8CString)
        let dir = try #require(template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }.map { String(cString: $0) })
        defer { _ = system("rm -rf '\(dir)'") }
        try body(dir)
    }

    static func write(_ path: String, _ text: String) throws {
        var dir = ""
        for part in path.split(separator: "/").dropLast() {
            dir += "/" + part
            try Files.makeDirectory(dir)
        }
        try Files.writeAtomically(path, Array(text.utf8))
    }

    static let passwd = """
        root:x:0:0:root:/root:/bin/sh
        alice:x:1000:1000::/home/alice:/bin/sh

          bob:x:1001:1001:Bob:/srv/bob:/bin/sh
        """
    static let group = """
        root:x:0:
        alice:x:1000:
        staff:x:50:alice,bob
        wheel:x:10:bob
        """

    /// process.user and HOME for `user` (nil = no User in the image).
    static func resolve(_ user: String?, rootfs: String?, env: [String] = []) throws(StoreError) -> (user: JSON?, home: String?, warnings: [String]) {
        var run = JSONObject()
        if let user { run["User"] = .string(user) }
        if !env.isEmpty { run["Env"] = .strings(env) }
        var config = ImageConfig(created: "2026-01-01T00:00:00Z", architecture: "amd64", os: "linux")
        config.runConfig = run
        var warnings: [String] = []
        let spec = try RuntimeSpec.generate(config: config, rootfs: rootfs, rootPath: "rootfs") { warnings.append($0) }
        let process = spec["process"]?.object
        let home = process?["env"]?.strings?.first { $0.hasPrefix("HOME=") }.map { String($0.dropFirst(5)) }
        return (process?["user"], home, warnings)
    }

    static func user(_ uid: Int, _ gid: Int, _ extra: [Int] = []) -> JSON {
        var o = JSONObject(["uid": .int(uid), "gid": .int(gid)])
        if !extra.isEmpty { o["additionalGids"] = .array(extra.map { .int($0) }) }
        return .object(o)
    }

    @Test(arguments: [
        (nil, user(0, 0), "/root"),
        ("alice", user(1000, 1000, [50]), "/home/alice"),
        ("alice:staff", user(1000, 50), "/home/alice"),
        ("alice:60", user(1000, 60), "/home/alice"),
        ("root:staff", user(0, 50), "/root"),
        ("bob", user(1001, 1001, [50, 10]), "/srv/bob"),
        ("1001", user(1001, 1001, [50, 10]), "/srv/bob"),
        ("1000:1000", user(1000, 1000), "/home/alice"),
        ("1000", user(1000, 1000, [50]), "/home/alice"),
        ("0", user(0, 0), "/root"),
        ("5000:6000", user(5000, 6000), nil),
        ("5000", user(5000, 0), nil),
        ("alice:wheel:extra", user(1000, 10), "/home/alice"),
    ] as [(String?, JSON, String?)])
    func userWithRootfs(spec: String?, expected: JSON, home: String?) throws {
        try Self.withTemporaryDirectory { dir in
            try Self.write(dir + "/etc/passwd", Self.passwd)
            try Self.write(dir + "/etc/group", Self.group)
            let result = try Self.resolve(spec, rootfs: dir)
            #expect(result.user == expected)
            #expect(result.home == home)
            #expect(result.warnings.isEmpty)
        }
    }

    @Test(arguments: [
        (nil, user(0, 0), false),
        ("alice", user(0, 0), true),
        ("alice:staff", user(0, 0), true),
        ("bob", user(0, 0), true),
        ("1001", user(1001, 0), false),
        ("1000:1000", user(1000, 1000), false),
        ("nosuch:staff", user(0, 0), true),
    ] as [(String?, JSON, Bool)])
    func userWithoutRootfs(spec: String?, expected: JSON, warns: Bool) throws {
        let result = try Self.resolve(spec, rootfs: nil)
        #expect(result.user == expected)
        #expect(result.home == nil)
        #expect(result.warnings == (warns ? ["could not parse user spec '\(spec ?? "")' without a rootfs -- defaulting to root:root"] : []))
    }

    @Test(arguments: [
        ("nosuch", StoreError.Code.notFound),
        ("nosuch:staff", .notFound),
        ("alice:nosuchgrp", .notFound),
        ("-1", .invalidInput),
        ("0:4294967296", .invalidInput),
    ])
    func unresolvableUserWithRootfs(spec: String, expected: StoreError.Code) throws {
        try Self.withTemporaryDirectory { dir in
            try Self.write(dir + "/etc/passwd", Self.passwd)
            try Self.write(dir + "/etc/group", Self.group)
            expectError(expected) { try Self.resolve(spec, rootfs: dir) }
        }
    }

    @Test func missingDatabases() throws {
        try Self.withTemporaryDirectory { dir in
            expectError(.notFound) { try Self.resolve("alice", rootfs: dir + "/nonexistent") }
            #expect(try Self.resolve("1000", rootfs: dir).user == Self.user(1000, 0))
            try Self.write(dir + "/etc/passwd", Self.passwd)  // no etc/group
            let alice = try Self.resolve("alice", rootfs: dir)
            #expect(alice.user == Self.user(1000, 1000))
            #expect(alice.home == "/home/alice")
        }
    }

    @Test func imageHomeIsKept() throws {
        try Self.withTemporaryDirectory { dir in
            try Self.write(dir + "/etc/passwd", Self.passwd)
            #expect(try Self.resolve("alice", rootfs: dir, env: ["HOME=/custom"]).home == "/custom")
            #expect(try Self.resolve("5000", rootfs: dir, env: ["HOME=/custom"]).home == "/custom")
        }
    }

    @Test func symlinksStayInsideTheRootfs() throws {
        try Self.withTemporaryDirectory { dir in
            // A relative link inside the rootfs is followed.
            try Self.write(dir + "/in/lib/passwd", Self.passwd)
            try Self.write(dir + "/in/etc/.keep", "")
            #expect(symlink("../lib/passwd", dir + "/in/etc/passwd") == 0)
            #expect(try Self.resolve("bob", rootfs: dir + "/in").user == Self.user(1001, 1001))

            // An absolute link, or one climbing out with "..", resolves inside the rootfs.
            try Self.write(dir + "/outside/etc/passwd", "eve:x:7:7::/eve:/bin/sh\n")
            try Self.write(dir + "/jail/.keep", "")
            #expect(symlink(dir + "/outside/etc", dir + "/jail/etc") == 0)
            expectError(.notFound) { try Self.resolve("eve", rootfs: dir + "/jail") }
            #expect(unlink(dir + "/jail/etc") == 0)
            #expect(symlink("../../../../../../../../outside/etc", dir + "/jail/etc") == 0)
            #expect(Passwd.resolve("etc/passwd", inRoot: dir + "/jail") == dir + "/jail/outside/etc/passwd")
            #expect(throws: StoreError.self) { try Self.resolve("eve", rootfs: dir + "/jail") }

            // A symlink loop is treated as a missing file.
            #expect(unlink(dir + "/jail/etc") == 0)
            #expect(symlink("etc", dir + "/jail/etc") == 0)
            #expect(Passwd.resolve("etc/passwd", inRoot: dir + "/jail") == nil)
            #expect(try Self.resolve("7", rootfs: dir + "/jail").user == Self.user(7, 0))
        }
    }

    @Test func parsing() {
        let users = Passwd.parseUsers(Array("a:x:1:2:g:/h:/s\r\n\n# c\nb:x:bad\n".utf8))
        #expect(users == [
            Passwd.User(name: "a", uid: 1, gid: 2, home: "/h"),
            Passwd.User(name: "# c", uid: 0, gid: 0, home: ""),
            Passwd.User(name: "b", uid: 0, gid: 0, home: ""),
        ])
        #expect(Passwd.parseGroups(Array("g:x:5:a,b\nh:x:6\n".utf8)) == [
            Passwd.Group(name: "g", gid: 5, members: ["a", "b"]),
            Passwd.Group(name: "h", gid: 6, members: []),
        ])
    }
}
