package hybster.coordination;

/** Node paths: absolute, '/'-separated, no empty or dot segments, no trailing slash. */
final class Paths {
    private Paths() {}

    /** What is wrong with {@code path}, or null. */
    static String check(String path) {
        if (path == null || !path.startsWith("/")) {
            return "a path starts with '/': " + path;
        }
        if (path.length() > 1 && path.endsWith("/")) {
            return "a path does not end with '/': " + path;
        }
        for (String segment : path.substring(1).split("/", -1)) {
            if (path.length() > 1 && (segment.isEmpty() || segment.equals(".") || segment.equals(".."))) {
                return "bad segment '" + segment + "' in " + path;
            }
        }
        return null;
    }

    static String parent(String path) {
        int slash = path.lastIndexOf('/');
        return slash == 0 ? "/" : path.substring(0, slash);
    }
}
