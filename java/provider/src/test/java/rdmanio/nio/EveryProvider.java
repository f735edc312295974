package rdmanio.nio;

import java.nio.channels.spi.SelectorProvider;
import java.util.List;

import org.junit.runner.RunWith;
import org.junit.runners.Parameterized;
import org.junit.runners.Parameterized.Parameter;
import org.junit.runners.Parameterized.Parameters;

/**
 * A test class whose every test runs on every provider of {@link Providers}
 * (the JDK's first, where it runs). A subclass that runs on others declares
 * its own static {@code providers()}, which hides this one.
 */
@RunWith(Parameterized.class)
public abstract class EveryProvider {
    @Parameter(0)
    public String name;

    @Parameter(1)
    public SelectorProvider provider;

    @Parameters(name = "{0}")
    public static List<Object[]> providers() {
        return Providers.all();
    }
}
