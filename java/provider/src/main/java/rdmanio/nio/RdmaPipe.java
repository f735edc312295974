package rdmanio.nio;

import java.io.IOException;
import java.nio.channels.Pipe;

/**
 * A pipe whose ends rdma-nio's selectors take: a kernel pipe in the engine,
 * each end a native socket that only reads or only writes, so its channels
 * wait, select and close as the socket channels do (the JDK's selectors take
 * its pipes and sockets alike; programs wake a selector through a pipe).
 */
final class RdmaPipe extends Pipe {
    private final PipeSourceChannel source;
    private final PipeSinkChannel sink;

    RdmaPipe(RdmaSelectorProvider provider) throws IOException {
        long[] ends = SocketNative.pipe(provider.config().blockingSpinMicros());
        this.source = new PipeSourceChannel(provider, new NativeSocket(ends[0]));
        this.sink = new PipeSinkChannel(provider, new NativeSocket(ends[1]));
    }

    @Override
    public SourceChannel source() {
        return source;
    }

    @Override
    public SinkChannel sink() {
        return sink;
    }
}
