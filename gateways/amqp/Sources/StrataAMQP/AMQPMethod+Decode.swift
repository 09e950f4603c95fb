import NIOCore

extension AMQPMethod {
    /// Reads a method frame's payload. An unknown class or method is not-implemented (540);
    /// arguments that run past the frame are a syntax error (502); both close the connection
    /// and name the method.
    public static func decode(_ buffer: inout ByteBuffer) throws(AMQPError) -> AMQPMethod {
        let classID: UInt16 = try buffer.readAMQPInteger()
        let methodID: UInt16 = try buffer.readAMQPInteger()
        do {
            return try decodeArguments(classID: classID, methodID: methodID, &buffer)
        } catch {
            throw error.on(classID: classID, methodID: methodID)
        }
    }

    private static func decodeArguments(
        classID: UInt16, methodID: UInt16, _ b: inout ByteBuffer
    ) throws(AMQPError) -> AMQPMethod {
        func short() throws(AMQPError) -> String { try b.readShortString() }
        func reserved() throws(AMQPError) { _ = try b.readAMQPInteger(as: UInt16.self) }
        func bits(_ n: Int) throws(AMQPError) -> [Bool] { try b.readBits(n) }
        func bit() throws(AMQPError) -> Bool { try b.readBits(1)[0] }
        func close() throws(AMQPError) -> Close {
            Close(
                replyCode: try b.readAMQPInteger(), replyText: try short(), classID: try b.readAMQPInteger(),
                methodID: try b.readAMQPInteger())
        }
        func tune() throws(AMQPError) -> Tune {
            Tune(
                channelMax: try b.readAMQPInteger(), frameMax: try b.readAMQPInteger(),
                heartbeat: try b.readAMQPInteger())
        }

        switch (classID, methodID) {
        case (10, 10):
            let major: UInt8 = try b.readAMQPInteger()
            let minor: UInt8 = try b.readAMQPInteger()
            var start = ConnectionStart(serverProperties: try b.readAMQPTable(), mechanisms: try b.readLongString())
            start.versionMajor = major
            start.versionMinor = minor
            start.locales = try b.readLongString()
            return .connectionStart(start)
        case (10, 11):
            return .connectionStartOk(
                ConnectionStartOk(
                    clientProperties: try b.readAMQPTable(), mechanism: try short(), response: try b.readLongBytes(),
                    locale: try short()))
        case (10, 20): return .connectionSecure(challenge: try b.readLongBytes())
        case (10, 21): return .connectionSecureOk(response: try b.readLongBytes())
        case (10, 30): return .connectionTune(try tune())
        case (10, 31): return .connectionTuneOk(try tune())
        case (10, 40):
            let virtualHost = try short()
            _ = try short()  // capabilities, reserved
            _ = try bit()  // insist, reserved
            return .connectionOpen(virtualHost: virtualHost)
        case (10, 41):
            _ = try short()
            return .connectionOpenOk
        case (10, 50): return .connectionClose(try close())
        case (10, 51): return .connectionCloseOk
        case (10, 60): return .connectionBlocked(reason: try short())
        case (10, 61): return .connectionUnblocked
        case (10, 70): return .connectionUpdateSecret(newSecret: try b.readLongBytes(), reason: try short())
        case (10, 71): return .connectionUpdateSecretOk

        case (20, 10):
            _ = try short()
            return .channelOpen
        case (20, 11):
            _ = try b.readLongBytes()
            return .channelOpenOk
        case (20, 20): return .channelFlow(active: try bit())
        case (20, 21): return .channelFlowOk(active: try bit())
        case (20, 40): return .channelClose(try close())
        case (20, 41): return .channelCloseOk

        case (40, 10):
            try reserved()
            var m = ExchangeDeclare(exchange: try short(), type: try short())
            let flags = try bits(5)
            (m.passive, m.durable, m.autoDelete, m.internal, m.noWait) = (
                flags[0], flags[1], flags[2], flags[3], flags[4]
            )
            m.arguments = try b.readAMQPTable()
            return .exchangeDeclare(m)
        case (40, 11): return .exchangeDeclareOk
        case (40, 20):
            try reserved()
            let exchange = try short()
            let flags = try bits(2)
            return .exchangeDelete(exchange: exchange, ifUnused: flags[0], noWait: flags[1])
        case (40, 21): return .exchangeDeleteOk
        case (40, 30), (40, 40):
            try reserved()
            var m = ExchangeBind(destination: try short(), source: try short(), routingKey: try short())
            m.noWait = try bit()
            m.arguments = try b.readAMQPTable()
            return methodID == 30 ? .exchangeBind(m) : .exchangeUnbind(m)
        case (40, 31): return .exchangeBindOk
        case (40, 51): return .exchangeUnbindOk

        case (50, 10):
            try reserved()
            var m = QueueDeclare(queue: try short())
            let flags = try bits(5)
            (m.passive, m.durable, m.exclusive, m.autoDelete, m.noWait) = (
                flags[0], flags[1], flags[2], flags[3], flags[4]
            )
            m.arguments = try b.readAMQPTable()
            return .queueDeclare(m)
        case (50, 11):
            return .queueDeclareOk(
                queue: try short(), messageCount: try b.readAMQPInteger(), consumerCount: try b.readAMQPInteger())
        case (50, 20):
            try reserved()
            var m = QueueBind(queue: try short(), exchange: try short(), routingKey: try short())
            m.noWait = try bit()
            m.arguments = try b.readAMQPTable()
            return .queueBind(m)
        case (50, 21): return .queueBindOk
        case (50, 30):
            try reserved()
            return .queuePurge(queue: try short(), noWait: try bit())
        case (50, 31): return .queuePurgeOk(messageCount: try b.readAMQPInteger())
        case (50, 40):
            try reserved()
            let queue = try short()
            let flags = try bits(3)
            return .queueDelete(queue: queue, ifUnused: flags[0], ifEmpty: flags[1], noWait: flags[2])
        case (50, 41): return .queueDeleteOk(messageCount: try b.readAMQPInteger())
        case (50, 50):
            try reserved()
            var m = QueueBind(queue: try short(), exchange: try short(), routingKey: try short())
            m.arguments = try b.readAMQPTable()
            return .queueUnbind(m)
        case (50, 51): return .queueUnbindOk

        case (60, 10):
            return .basicQos(
                prefetchSize: try b.readAMQPInteger(), prefetchCount: try b.readAMQPInteger(), global: try bit())
        case (60, 11): return .basicQosOk
        case (60, 20):
            try reserved()
            var m = BasicConsume(queue: try short(), consumerTag: try short())
            let flags = try bits(4)
            (m.noLocal, m.noAck, m.exclusive, m.noWait) = (flags[0], flags[1], flags[2], flags[3])
            m.arguments = try b.readAMQPTable()
            return .basicConsume(m)
        case (60, 21): return .basicConsumeOk(consumerTag: try short())
        case (60, 30): return .basicCancel(consumerTag: try short(), noWait: try bit())
        case (60, 31): return .basicCancelOk(consumerTag: try short())
        case (60, 40):
            try reserved()
            var m = BasicPublish(exchange: try short(), routingKey: try short())
            let flags = try bits(2)
            (m.mandatory, m.immediate) = (flags[0], flags[1])
            return .basicPublish(m)
        case (60, 50):
            return .basicReturn(
                BasicReturn(
                    replyCode: try b.readAMQPInteger(), replyText: try short(), exchange: try short(),
                    routingKey: try short()))
        case (60, 60):
            return .basicDeliver(
                BasicDeliver(
                    consumerTag: try short(), deliveryTag: try b.readAMQPInteger(), redelivered: try bit(),
                    exchange: try short(), routingKey: try short()))
        case (60, 70):
            try reserved()
            return .basicGet(queue: try short(), noAck: try bit())
        case (60, 71):
            return .basicGetOk(
                BasicGetOk(
                    deliveryTag: try b.readAMQPInteger(), redelivered: try bit(), exchange: try short(),
                    routingKey: try short(), messageCount: try b.readAMQPInteger()))
        case (60, 72):
            _ = try short()
            return .basicGetEmpty
        case (60, 80): return .basicAck(deliveryTag: try b.readAMQPInteger(), multiple: try bit())
        case (60, 90): return .basicReject(deliveryTag: try b.readAMQPInteger(), requeue: try bit())
        case (60, 100): return .basicRecoverAsync(requeue: try bit())
        case (60, 110): return .basicRecover(requeue: try bit())
        case (60, 111): return .basicRecoverOk
        case (60, 120):
            let tag: UInt64 = try b.readAMQPInteger()
            let flags = try bits(2)
            return .basicNack(deliveryTag: tag, multiple: flags[0], requeue: flags[1])

        case (85, 10): return .confirmSelect(noWait: try bit())
        case (85, 11): return .confirmSelectOk

        case (90, 10): return .txSelect
        case (90, 11): return .txSelectOk
        case (90, 20): return .txCommit
        case (90, 21): return .txCommitOk
        case (90, 30): return .txRollback
        case (90, 31): return .txRollbackOk

        default:
            throw AMQPError(AMQPError.notImplemented, "unknown method \(classID).\(methodID)")
        }
    }
}
