/// A failure of a bundle step that a caller (or a test) must tell apart from the others without
/// reading its text: the step's own refusals. Failures of the layout, the layers or a system
/// call below it stay StoreError.
///
/// TODO(merge): these codes become cases of the coded error type LayerStore's split introduces
/// (issue 17 item 4); until then this is BundleKit's own one-line error with a code.
public struct BundleError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: Sendable, Equatable {
        /// unpack into a bundle that has a config.json, rootfs or umoci.json already.
        case bundleExists
        /// A mounted-mode bundle whose rootfs is not served (after a reboot, or its server
        /// was killed): `umoci mount BUNDLE` brings it back.
        case notMounted
        /// An unmounted mounted-mode bundle whose plain rootfs/ holds entries: repack cannot
        /// see them (they are not in upper/).
        case strayEntries
        /// The bundle's base image is not in the layout repack was given.
        case baseImageUnreadable
        /// `umoci mount` of an extracted bundle, or of one without mount information.
        case notMountable
        /// `umoci mount` of a bundle whose rootfs is served already.
        case alreadyMounted
    }

    public var code: Code
    public var message: String
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }
    public var description: String { message }
}
