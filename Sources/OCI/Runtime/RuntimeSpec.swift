import Basics
/// The runtime-spec `config.json` umoci generates for an image (`umoci raw runtime-config`,
/// and the one `unpack` writes into a bundle): umoci's default template (runtime-tools'
/// example spec, without seccomp) mutated with the image configuration.
///
/// The output has the shape of umoci 0.4.7's (ociVersion "1.0.0", no cgroup namespace), with
/// three points where umoci 0.6 is followed instead, as the project's behaviour notes ask:
/// - HOME from the user's passwd entry is added only when the environment lacks HOME (0.4.7
///   overwrote an image's HOME);
/// - an `org.opencontainers.image.*` annotation whose value is empty is left out (0.4.7 wrote
///   `"author": ""` and so on), and `org.opencontainers.image.variant` is written when set;
/// - Labels are applied after those annotations, so a label of the same name wins.
public enum RuntimeSpec {
    /// The runtime-spec version of the configs this tool writes (`ociVersion`).
    public static let version = "1.0.0"
    /// The runtime config.json umoci generates for an image. `rootfs`: the rootfs directory used for
    /// resolving the user via its etc/passwd and etc/group (nil = no rootfs given); `rootPath`: the
    /// value of root.path ("." when no --rootfs, else the --rootfs argument as given; unpack will pass "rootfs").
    /// `warn` receives warnings (e.g. user spec that cannot be resolved without a rootfs).
    ///
    /// The user database is read with every symlink resolved inside `rootfs` (as umoci's
    /// SecureJoin does elsewhere), so a hostile rootfs cannot make it read host files.
    public static func generate(config: ImageConfig, rootfs: String?, rootPath: String, warn: (String) -> Void) throws(StoreError) -> JSONObject {
        let run = config.runConfig
        guard config.os == "linux" else { throw StoreError(.unsupported, "unsupported OS: \(config.os)") }
        let rootfs = rootfs.flatMap { $0.isEmpty ? nil : $0 }

        // process.env: the defaults, then the image's Env by name (replaced in place, else appended).
        var env = defaultEnv
        for entry in run["Env"]?.strings ?? [] {
            guard let eq = entry.firstIndex(of: "=") else {
                throw StoreError(.invalidInput, "parsing image.Config.Env: environment variable must contain '=': \(entry)")
            }
            let name = String(entry[..<eq])
            guard !name.isEmpty else {
                throw StoreError(.invalidInput, "parsing image.Config.Env: environment variable must have non-empty name: \(entry)")
            }
            setEnv(&env, name, String(entry[entry.index(after: eq)...]), replace: true)
        }

        var args = (run["Entrypoint"]?.strings ?? []) + (run["Cmd"]?.strings ?? [])
        if args.isEmpty { args = ["sh"] }
        let workingDir = run["WorkingDir"]?.string ?? ""

        // process.user: resolved through the rootfs; without one only numeric ids can be.
        let userSpec = run["User"]?.string ?? ""
        let user: Passwd.ExecUser
        do {
            user = try Passwd.execUser(userSpec, rootfs: rootfs)
        } catch {
            if rootfs != nil { throw error.wrapped("cannot parse user spec: '\(userSpec)'") }
            warn("could not parse user spec '\(userSpec)' without a rootfs -- defaulting to root:root")
            user = Passwd.ExecUser()
        }
        if !user.home.isEmpty { setEnv(&env, "HOME", user.home, replace: false) }

        var userJSON = JSONObject(["uid": .int(user.uid), "gid": .int(user.gid)])
        if !user.additionalGids.isEmpty { userJSON["additionalGids"] = .array(user.additionalGids.map { .int($0) }) }

        var process = JSONObject()
        process["terminal"] = .bool(true)
        process["user"] = .object(userJSON)
        process["args"] = .strings(args)
        process["env"] = .strings(env)
        process["cwd"] = .string(workingDir.isEmpty ? "/" : workingDir)
        let caps = JSON.strings(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"])
        process["capabilities"] = .object(JSONObject([
            "bounding": caps, "effective": caps, "inheritable": caps, "permitted": caps, "ambient": caps,
        ]))
        process["rlimits"] = .array([.object(JSONObject([
            "type": .string("RLIMIT_NOFILE"), "hard": .int(1024), "soft": .int(1024),
        ]))])
        process["noNewPrivileges"] = .bool(true)

        // mounts: the defaults, then a tmpfs per volume.
        var mounts = defaultMounts
        for volume in sortedKeys(run["Volumes"]) {
            mounts.append(mount(volume, "tmpfs", "none", ["rw", "nosuid", "nodev", "noexec", "relatime"]))
        }

        var spec = JSONObject()
        spec["ociVersion"] = .string(RuntimeSpec.version)
        spec["process"] = .object(process)
        spec["root"] = .object(JSONObject(["path": .string(rootPath)]))
        spec["hostname"] = .string("umoci-default")
        spec["mounts"] = .array(mounts)
        spec["annotations"] = .object(annotations(config))
        spec["linux"] = .object(defaultLinux)
        return spec
    }

    /// The image-spec conversion annotations (empty values left out), then the Labels over
    /// them; sorted by key as Go marshals a map.
    static func annotations(_ config: ImageConfig) -> JSONObject {
        let run = config.runConfig
        var result = JSONObject()
        func set(_ name: String, _ value: String?) {
            if let value, !value.isEmpty { result["org.opencontainers.image." + name] = .string(value) }
        }
        set("os", config.os)
        set("architecture", config.architecture)
        set("variant", config.variant)
        set("author", config.author)
        set("created", goTime(config.created))
        set("stopSignal", run["StopSignal"]?.string)
        set("exposedPorts", sortedKeys(run["ExposedPorts"]).joined(separator: ","))
        for label in run["Labels"]?.object?.members ?? [] {
            if let value = label.value.string { result[label.key] = .string(value) }
        }
        return result.sortedByKey()
    }

    /// `created` as umoci writes it after a round trip through Go's time.Time (see
    /// `Timestamp.normalize`); a missing time is Go's zero time.
    static func goTime(_ created: String?) -> String {
        guard let created, !created.isEmpty else { return "0001-01-01T00:00:00Z" }
        return Timestamp.normalize(created) ?? created
    }

    /// The keys of a JSON object (ExposedPorts, Volumes), sorted as Go's sort.Strings does.
    static func sortedKeys(_ value: JSON?) -> [String] {
        (value?.object?.keys ?? []).sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
    }

    static func setEnv(_ env: inout [String], _ name: String, _ value: String, replace: Bool) {
        if let i = env.firstIndex(where: { $0.hasPrefix(name + "=") }) {
            if replace { env[i] = name + "=" + value }
        } else {
            env.append(name + "=" + value)
        }
    }

    static let defaultEnv = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"]

    static func mount(_ destination: String, _ type: String, _ source: String, _ options: [String]) -> JSON {
        var m = JSONObject(["destination": .string(destination), "type": .string(type), "source": .string(source)])
        if !options.isEmpty { m["options"] = .strings(options) }
        return .object(m)
    }

    static let defaultMounts: [JSON] = [
        mount("/proc", "proc", "proc", []),
        mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        mount("/dev/pts", "devpts", "devpts", ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
        mount("/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
        mount("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
        mount("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", "ro"]),
        mount("/sys/fs/cgroup", "cgroup", "cgroup", ["nosuid", "noexec", "nodev", "relatime", "ro"]),
    ]

    static let defaultLinux = JSONObject([
        "resources": .object(JSONObject([
            "devices": .array([.object(JSONObject(["allow": .bool(false), "access": .string("rwm")]))]),
        ])),
        "namespaces": .array(["pid", "network", "ipc", "uts", "mount"].map { .object(JSONObject(["type": .string($0)])) }),
        "maskedPaths": .strings([
            "/proc/kcore", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
            "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
        ]),
        "readonlyPaths": .strings([
            "/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
        ]),
    ])
}
