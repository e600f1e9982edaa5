/* A shared object that is not a trainpipe plugin: it exports no entry symbol. */
int not_a_plugin_function(void);
int not_a_plugin_function(void) { return 42; }
