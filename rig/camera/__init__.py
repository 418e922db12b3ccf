"""Camera drivers: Basler (pypylon) and OpenCV."""
