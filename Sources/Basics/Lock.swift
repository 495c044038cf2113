#if canImport(Glibc)
import Glibc
#endif

/// A pthread mutex owned by this object: the one lock type for state that threads also wait on
/// (with `Condition`). State that is only guarded, never waited for, uses Synchronization's
/// `Mutex`. The owner of what a lock guards writes down which fields it guards.
///
/// `withLock` takes a non-escaping closure: locking costs no allocation.
public final class Lock: @unchecked Sendable {
    fileprivate let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    public init() { pthread_mutex_init(mutex, nil) }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    public func lock() { pthread_mutex_lock(mutex) }
    public func unlock() { pthread_mutex_unlock(mutex) }

    @inline(__always)
    public func withLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// A condition variable to wait on with a `Lock` held: `wait(lock)` releases it while
    /// waiting and holds it again on return. Wake-ups may be spurious: wait in a loop on the
    /// guarded state.
    public final class Condition: @unchecked Sendable {
        private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

        public init() { pthread_cond_init(condition, nil) }

        deinit {
            pthread_cond_destroy(condition)
            condition.deallocate()
        }

        /// `lock` must be held by the calling thread.
        public func wait(_ lock: Lock) { pthread_cond_wait(condition, lock.mutex) }

        /// Wakes one waiter.
        public func signal() { pthread_cond_signal(condition) }

        /// Wakes every waiter.
        public func broadcast() { pthread_cond_broadcast(condition) }
    }
}
