"""The energy landscape: relaxation to exact minima, saddle searches (ARTn), the duplicate-minimum rule."""
