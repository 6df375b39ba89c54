"""The console's pages: one module per page, registered in console.app.PAGES."""
