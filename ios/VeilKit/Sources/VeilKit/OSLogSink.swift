import os

/// The node's logs in the unified log (Console.app, `log stream --predicate
/// 'subsystem == "org.veil"'`). Lines are public: at `info` they carry no addresses or keys
/// (the node logs addresses only at `debug`, keys never; docs/cli.md).
public final class OSLogSink: LogSink {
    private let logger: Logger

    public init(category: String = "node") {
        logger = Logger(subsystem: "org.veil", category: category)
    }

    public func log(level: LogLevel, target: String, message: String) {
        switch level {
        case .error: logger.error("\(target, privacy: .public): \(message, privacy: .public)")
        case .warn: logger.warning("\(target, privacy: .public): \(message, privacy: .public)")
        case .info: logger.info("\(target, privacy: .public): \(message, privacy: .public)")
        case .debug, .trace: logger.debug("\(target, privacy: .public): \(message, privacy: .public)")
        }
    }
}
