"""Files and display: videos, images, figures."""
